"""Shared fixtures. Importing mtmoe first fixes the Keras environment before TensorFlow loads."""
import json
import os
import subprocess
import sys

import pytest

import mtmoe  # noqa: F401

MTMOE = os.path.join(os.path.dirname(sys.executable), "mtmoe")


@pytest.fixture(scope="session")
def cli():
    """Runs the installed `mtmoe` command in a subprocess, as a user would."""

    def run(*args, timeout=300):
        return subprocess.run([MTMOE, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture
def write_jsonl(tmp_path):
    """Writes {split: [row, ...]} as <tmp>/in/<split>.jsonl and returns the folder."""

    def write(splits):
        folder = tmp_path / "in"
        folder.mkdir(exist_ok=True)
        for split, rows in splits.items():
            (folder / f"{split}.jsonl").write_text(
                "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return str(folder)

    return write


@pytest.fixture
def default_tasks():
    from mtmoe.config import load_config

    return load_config().tasks
