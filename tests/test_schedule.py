"""Scheduled retraining: the crontab line, its installation, and the run lock that keeps two runs out
of one work dir."""
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from mtmoe.core.schedule import LOCK_FILE, RunLocked, cron_marker, crontab_line, run_lock

MTMOE = os.path.join(os.path.dirname(sys.executable), "mtmoe")
# A stand-in for cron's `crontab`: -l prints the stored table (or fails as cron does when there is
# none), - stores stdin.
FAKE_CRONTAB = """#!/bin/bash
table="$(dirname "$0")/table"
case "$1" in
  -l) [ -f "$table" ] || { echo "no crontab for root" >&2; exit 1; }; cat "$table" ;;
  -) cat > "$table" ;;
  *) exit 64 ;;
esac
"""


def _split(line):
    """(the five time fields, the shell words of the command, the trailing comment)."""
    *fields, command = line.split(None, 5)
    words = shlex.split(command, comments=True)
    return fields, words, command[command.rindex("#"):]


@pytest.mark.parametrize("every, at, fields", [
    ("hour", "03:00", ["0", "*", "*", "*", "*"]),
    ("hour", "07:45", ["45", "*", "*", "*", "*"]),
    ("day", "03:00", ["0", "3", "*", "*", "*"]),
    ("day", "22:30", ["30", "22", "*", "*", "*"]),
    ("week", "6:05", ["5", "6", "*", "*", "1"]),
])
def test_crontab_line_fields(tmp_path, every, at, fields):
    line = crontab_line(every, at, str(tmp_path / "work"))
    assert _split(line)[0] == fields


def test_crontab_line_runs_mtmoe_with_absolute_paths_and_logs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("tasks: []\n")
    line = crontab_line("day", "03:00", "work", config="c.yaml", data="data")
    _, words, comment = _split(line)
    work, logs = str(tmp_path / "work"), str(tmp_path / "work" / "logs")
    assert words[:4] == ["mkdir", "-p", logs, "&&"]
    assert words[4:] == [MTMOE, "run", "--config", str(tmp_path / "c.yaml"),
                         "--data", str(tmp_path / "data"), "--work-dir", work,
                         ">>", os.path.join(logs, "cron.log"), "2>&1"]
    assert comment == cron_marker(work) == f"# mtmoe:{work}"


def test_crontab_line_leaves_out_config_and_data_not_given(tmp_path):
    _, words, _ = _split(crontab_line("day", "03:00", str(tmp_path)))
    assert "--config" not in words and "--data" not in words
    assert words[words.index("run") + 1:words.index(">>")] == ["--work-dir", str(tmp_path)]


@pytest.mark.parametrize("at", ["24:00", "12:60", "3pm", "1230"])
def test_schedule_rejects_a_bad_time(cli, at):
    result = cli("schedule", "--every", "day", "--at", at)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --at {at!r}: expected a 24-hour time HH:MM")
    assert result.stdout == ""


def test_schedule_install_keeps_other_lines_and_replaces_its_own(tmp_path, monkeypatch, cli):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "crontab").write_text(FAKE_CRONTAB)
    (bin_dir / "crontab").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    table = bin_dir / "table"
    work, other_work = tmp_path / "work", tmp_path / "work2"

    first = cli("schedule", "--every", "day", "--work-dir", work, "--install")
    assert first.returncode == 0, first.stderr
    assert table.read_text() == first.stdout.splitlines()[0] + "\n"

    others = ["MAILTO=ops@example.com", "15 1 * * * /usr/bin/backup # nightly"]
    table.write_text("\n".join(others + [table.read_text()]))
    assert cli("schedule", "--every", "day", "--work-dir", other_work, "--install").returncode == 0
    again = cli("schedule", "--every", "week", "--at", "04:10", "--work-dir", work, "--install")
    assert again.returncode == 0, again.stderr
    assert "in place of the entry" in again.stdout

    lines = table.read_text().splitlines()
    assert lines[:2] == others
    ours = [line for line in lines if line.endswith(cron_marker(str(work)))]
    assert ours == [again.stdout.splitlines()[0]]
    assert _split(ours[0])[0] == ["10", "4", "*", "*", "1"]
    assert len([line for line in lines if line.endswith(cron_marker(str(other_work)))]) == 1
    assert len(lines) == 4


def test_schedule_install_without_cron_prints_the_line_and_says_so(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = cli("schedule", "--every", "hour", "--work-dir", tmp_path / "work", "--install")
    assert result.returncode == 2
    assert result.stdout.rstrip().endswith(cron_marker(str(tmp_path / "work")))
    assert result.stderr == "error: crontab not found: install cron, or add the line above by hand\n"


def test_run_lock_refuses_a_second_holder_until_released(tmp_path):
    with run_lock(str(tmp_path)):
        assert json.loads(_read(tmp_path / LOCK_FILE))["pid"] == os.getpid()
        with pytest.raises(RunLocked, match=f"another mtmoe run \\(pid {os.getpid()}, started "):
            with run_lock(str(tmp_path)):
                pass
        assert json.loads(_read(tmp_path / LOCK_FILE))["pid"] == os.getpid()  # the refused one wrote nothing
    with run_lock(str(tmp_path)):
        pass


def test_run_is_refused_at_once_while_another_holds_the_work_dir(tmp_path, cli):
    work = tmp_path / "work"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from mtmoe.core.schedule import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    time.sleep(300)\n", str(work)])
    try:
        deadline = time.monotonic() + 60
        while str(holder.pid) not in _read(work / LOCK_FILE):
            assert time.monotonic() < deadline and holder.poll() is None, "the holder never locked"
            time.sleep(0.1)
        result = cli("run", "--work-dir", work)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"another mtmoe run (pid {holder.pid}, started " in result.stderr
    assert str(work / LOCK_FILE) in result.stderr
    # Refused before any pipeline work: no sample generated, no metadata store.
    assert sorted(os.listdir(work)) == [LOCK_FILE]


def _read(path):
    return path.read_text() if path.exists() else ""
