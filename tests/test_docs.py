"""The documentation against the code: every `mtmoe` command README.md and docs/ mention names a
command and options the CLI has (a renamed option fails here, in seconds; `.ci/doc_commands.py`
runs the fenced commands themselves in CI), the guides' links resolve, and README stays a front
door."""
import argparse
import glob
import os
import re
import shlex

import pytest

from mtmoe.cli import build_parser
from mtmoe.cli_reference import with_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md"))]
INLINE = re.compile(r"`(mtmoe [^`]+)`")
FENCED = re.compile(r"^```sh(?: not-run)?\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def mentioned_commands(text: str):
    """Every `mtmoe ...` command of a page: inline code spans and the lines of sh blocks (joined
    where they continue with a backslash)."""
    found = [m.group(1) for m in INLINE.finditer(text)]
    for block in FENCED.findall(text):
        for line in block.replace("\\\n", " ").split("\n"):
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|\|\||;|\|", line):
                words = part.split()
                while words and "=" in words[0]:  # VAR=value before the command
                    words = words[1:]
                if words and words[0] in ("mtmoe", ".venv/bin/mtmoe"):
                    found.append(" ".join(["mtmoe", *words[1:]]))
    return found


def _subcommand(parser, words):
    """(the leaf parser, the words after the command's name) of a command line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if not words or words[0] not in action.choices:
                raise AssertionError(f"no command {words[:1]}; commands: {sorted(action.choices)}")
            return _subcommand(action.choices[words[0]], words[1:])
    return parser, words


def check_command(command: str) -> None:
    """Raises AssertionError when `command` names a command, an option or a choice the CLI lacks.
    Usage notation is read as such: [optional], {a,b} choices, FILE placeholders, `...`."""
    text = re.sub(r"[\[\]|]", " ", command.replace("\\$", "$"))
    words = [w for w in shlex.split(text.replace("'", " "), posix=True) if w not in ("...", "&")]
    parser, rest = _subcommand(build_parser(), words[1:])
    options = {flag: action for action in parser._actions for flag in action.option_strings}
    for i, word in enumerate(rest):
        flag = word.split("=")[0]
        if not flag.startswith("--"):
            continue
        assert flag in options, f"`{command}`: {' '.join(words[:2])} has no option {flag}"
        action = options[flag]
        value = word.split("=", 1)[1] if "=" in word else (rest[i + 1] if i + 1 < len(rest) else None)
        if action.choices and value is not None and not value.isupper():
            choices = value.strip("{}").split(",") if value.startswith("{") else [value]
            for choice in choices:
                assert choice in action.choices, f"`{command}`: {flag} has no choice {choice}"


@pytest.mark.parametrize("page", PAGES)
def test_every_command_a_page_mentions_exists_with_its_options(page):
    commands = mentioned_commands(_read(page))
    for command in commands:
        check_command(command)


def test_the_check_catches_a_renamed_option_a_wrong_choice_and_an_unknown_command():
    check_command("mtmoe run [--config FILE] [--epochs N] --force")
    check_command("mtmoe init --data IN --format {jsonl,slu,conll} [--out CONFIG]")
    with pytest.raises(AssertionError, match="no option --epoch"):
        check_command("mtmoe run --epoch 3")
    with pytest.raises(AssertionError, match="no choice csv"):
        check_command("mtmoe init --data d --format csv")
    with pytest.raises(AssertionError, match="no command"):
        check_command("mtmoe train --config c")


def test_the_walkthrough_is_found_in_fenced_blocks():
    commands = mentioned_commands(_read("README.md"))
    for step in ("mtmoe init", "mtmoe data convert", "mtmoe run", "mtmoe serve", "mtmoe predict"):
        assert any(c.startswith(step) for c in commands), step


@pytest.mark.parametrize("page", PAGES + ["bench/README.md"])
def test_relative_links_resolve(page):
    folder = os.path.dirname(os.path.join(ROOT, page))
    for target in LINK.findall(_read(page)):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert os.path.exists(os.path.join(folder, target)), f"{page}: broken link {target}"


def test_readme_is_a_front_door():
    lines = _read("README.md").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; guides go under docs/"


def test_the_command_reference_is_the_generated_one():
    page = _read("docs/cli.md")
    assert page == with_reference(page), \
        "docs/cli.md's command reference is out of date with mtmoe/cli.py: run `make docs`"
    for command in ("mtmoe run", "mtmoe versions", "mtmoe data convert", "mtmoe schema update"):
        assert f"### `{command}`" in page
