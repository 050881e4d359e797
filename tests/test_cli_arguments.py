"""Every option of every command, read off the argparse parser itself: each has help text, and each
bad value (not a number, out of range, not a choice, missing, unknown) is one line on stderr and
exit code 2, without TensorFlow or a traceback."""
import argparse

import pytest

from mtmoe.cli import build_parser, main


def _commands(parser, path=()):
    """(command words, parser) of every leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))
            return
    yield path, parser


def _options(parser):
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                                  argparse._SubParsersAction))]


def _valid(action) -> str:
    return action.choices[0] if action.choices else "1"


def _filler(parser, leave_out=None):
    """Arguments that satisfy the command's required options and positionals, but `leave_out`."""
    argv = []
    for action in _options(parser):
        if action is leave_out:
            continue
        if action.option_strings and action.required:
            argv += [action.option_strings[0], _valid(action)]
        elif not action.option_strings and action.nargs != "?":
            argv.append(_valid(action))
    return argv


def _bad_cases():
    for path, parser in _commands(build_parser()):
        name = " ".join(path)
        yield f"{name}: unknown option", [*path, *_filler(parser), "--no-such-option"]
        for action in _options(parser):
            flag = action.option_strings[0] if action.option_strings else None
            if flag and action.nargs != 0:
                yield f"{name} {flag}: no value", [*path, *_filler(parser, action), flag]
            if flag and action.required:
                yield f"{name} {flag}: missing", [*path, *_filler(parser, action)]
            if flag and action.choices:
                yield f"{name} {flag}: not a choice", [*path, *_filler(parser, action), flag,
                                                       "no-such-choice"]
            if flag and action.type is not None:
                yield f"{name} {flag}: not a number", [*path, *_filler(parser, action), flag, "x"]
                try:
                    action.type("-1")
                except argparse.ArgumentTypeError:
                    yield f"{name} {flag}: out of range", [*path, *_filler(parser, action), flag, "-1"]


CASES = list(_bad_cases())


@pytest.mark.parametrize("argv", [argv for _, argv in CASES], ids=[name for name, _ in CASES])
def test_a_bad_argument_is_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    error = capsys.readouterr().err
    assert stopped.value.code == 2
    assert len(error.splitlines()) == 1 and error.startswith("mtmoe") and "error: " in error, error


def test_the_cases_cover_every_kind_of_bad_argument():
    kinds = {name.rsplit(": ", 1)[1] for name, _ in CASES}
    assert kinds == {"unknown option", "no value", "missing", "not a choice", "not a number",
                     "out of range"}


def test_every_option_of_every_command_says_what_it_does():
    undocumented = [f"{' '.join(path)} {action.option_strings or action.dest}"
                    for path, parser in _commands(build_parser()) for action in _options(parser)
                    if not action.help or action.help == argparse.SUPPRESS]
    assert undocumented == []


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("mtmoe ")


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    import os
    import subprocess
    import sys

    mtmoe = os.path.join(os.path.dirname(sys.executable), "mtmoe")
    process = subprocess.Popen([mtmoe, "run", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # before the help is written: its write finds the pipe closed
    assert process.wait(timeout=60) == 1
    assert process.stderr.read() == b""
