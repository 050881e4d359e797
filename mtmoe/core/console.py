"""What a person sees while a long command runs: one line per step, progress for training, and
everything else (TensorFlow, Beam and absl logs, warnings, Keras' own output) in a log file.

`logged_to(path)` sends file descriptors 1 and 2 to the log, so that C++ logs and worker processes
go there too; `say` and `progress` still reach the console. Light: no TensorFlow.
"""
import atexit
import contextlib
import os
import sys
from typing import Optional, TextIO

_console: Optional[TextIO] = None  # where `say` writes while a log captures the output
_console_errors: Optional[TextIO] = None  # where `warn` writes then


def say(line: str) -> None:
    stream = _console or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def warn(text: str) -> None:
    """A warning the person running the command must see: on the console's stderr, and in the log."""
    for stream in {id(s): s for s in (_console_errors or sys.stderr, sys.stderr)}.values():
        stream.write(f"warning: {text}\n")
        stream.flush()


def progress(label: str, done: int, total: int, detail: str = "") -> None:
    """`label [#####     ] done/total detail`: one line per call (a log or a pipe keeps each); on
    a terminal the line is rewritten in place until the last step."""
    stream = _console or sys.stdout
    width = 20
    bar = "#" * round(width * done / max(total, 1))
    line = f"    {label} [{bar:<{width}}] {done}/{total} {detail}".rstrip()
    if stream.isatty():
        stream.write("\r" + line + ("\n" if done >= total else ""))
    else:
        stream.write(line + "\n")
    stream.flush()


def _fileno(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests, notebooks)
        return None


@contextlib.contextmanager
def logged_to(path: str, verbose: bool = False):
    """Output of the block goes to `path` (appended), the console keeps `say`'s lines; with
    `verbose`, everything is shown live and logged nowhere."""
    global _console, _console_errors
    if verbose:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    # The console: copies of the real stdout and stderr, or the in-memory streams standing for them.
    console = [os.fdopen(os.dup(fd), "w", buffering=1) if fd is not None else stream
               for fd, stream in ((_fileno(sys.stdout), sys.stdout), (_fileno(sys.stderr), sys.stderr))]
    with open(path, "a", buffering=1) as log:
        previous = _console, _console_errors, sys.stdout, sys.stderr
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _console, _console_errors = console
        sys.stdout, sys.stderr = log, log
        try:
            yield
        finally:
            log.flush()
            _console, _console_errors, sys.stdout, sys.stderr = previous
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            for stream, replaced in zip(console, previous[2:]):
                if stream is not replaced:
                    stream.close()


def log_at_exit(path: str) -> None:
    """At interpreter exit, stderr goes to `path`: what TensorFlow's objects print while they are
    torn down (tracebacks from `__del__`) belongs in the log, not under the command's last line.
    Only for a process whose stderr is a real file (the console script, not an in-process call)."""
    if _fileno(sys.stderr) is None:
        return

    def redirect():
        sys.stderr.flush()
        with open(path, "a") as log:
            os.dup2(log.fileno(), 2)

    atexit.register(redirect)
