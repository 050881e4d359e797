"""Scheduled retraining with cron: the crontab line for `mtmoe run`, its installation, and the run lock
that keeps two runs out of one work dir (a cron run that starts while the last one still runs).

Nothing here imports TensorFlow, so `mtmoe schedule` answers at once.
"""
import contextlib
import datetime
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from mtmoe.core.errors import UserError

LOCK_FILE = "run.lock"
EVERY = ("hour", "day", "week")
DEFAULT_AT = "03:00"
_AT = re.compile(r"^(\d{1,2}):(\d{2})$")


class RunLocked(UserError):
    """Another process holds the work dir's run lock."""


@contextlib.contextmanager
def run_lock(work_dir: str):
    """Holds an exclusive lock on <work_dir>/run.lock, or raises RunLocked at once.

    flock goes with the process, so a killed run leaves no stale lock; the file only says who holds
    it, and is opened without truncating so that a refused run can still read the holder's pid.
    """
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{path}: another mtmoe run ({_holder(fd)}) is using this work dir; "
                            "wait for it to end or use another --work-dir (the lock ends with that "
                            "process: deleting the file would let two runs collide)") from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": started}).encode() + b"\n")
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """'pid N, started T' from the lock file; the holder may not have written it yet."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return f"pid {holder['pid']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown"


def _parse_at(at: str):
    """(hour, minute) of an --at value, 24-hour HH:MM."""
    match = _AT.match(at)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise UserError(f"--at {at!r}: expected a 24-hour time HH:MM, e.g. 03:00 or 22:30")
    return int(match.group(1)), int(match.group(2))


def cron_marker(work_dir: str) -> str:
    """The comment that ends a work dir's crontab line, so that installing again replaces it."""
    return _cron_escape(f"# mtmoe:{os.path.abspath(work_dir)}")


def crontab_line(every: str, at: str, work_dir: str, config=None, data=None) -> str:
    """A crontab line that runs `mtmoe run` with absolute paths (cron starts in $HOME), appending its
    output to <work_dir>/logs/cron.log."""
    hour, minute = _parse_at(at)
    fields = {"hour": f"{minute} * * * *", "day": f"{minute} {hour} * * *",
              "week": f"{minute} {hour} * * 1"}[every]
    if config and not os.path.isfile(config):
        raise UserError(f"{config}: config file not found")
    work_dir = os.path.abspath(work_dir)
    logs = os.path.join(work_dir, "logs")
    command = [os.path.join(os.path.dirname(sys.executable), "mtmoe"), "run"]
    for flag, path in (("--config", config), ("--data", data), ("--work-dir", work_dir)):
        if path:
            command += [flag, os.path.abspath(path)]
    shell = (f"mkdir -p {shlex.quote(logs)} && {shlex.join(command)} "
             f">> {shlex.quote(os.path.join(logs, 'cron.log'))} 2>&1")
    return f"{fields} {_cron_escape(shell)} {cron_marker(work_dir)}"


def _cron_escape(text: str) -> str:
    """cron turns an unescaped % into a newline."""
    return text.replace("%", "\\%")


def install_crontab(line: str, marker: str) -> bool:
    """Adds `line` to the user's crontab in place of any line ending with `marker`; True when it
    replaced one."""
    if shutil.which("crontab") is None:
        raise UserError("crontab not found: install cron, or add the line above by hand")
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    if current.returncode == 0:
        lines = current.stdout.splitlines()
    elif not current.stdout.strip() or "no crontab for" in current.stdout + current.stderr:
        lines = []  # the user has no crontab yet
    else:
        raise UserError(f"`crontab -l` failed: {current.stderr.strip()}")
    kept = [existing for existing in lines if not existing.rstrip().endswith(marker)]
    written = subprocess.run(["crontab", "-"], input="\n".join(kept + [line]) + "\n",
                             capture_output=True, text=True)
    if written.returncode != 0:
        raise UserError(f"`crontab -` failed: {written.stderr.strip()}")
    return len(kept) < len(lines)
