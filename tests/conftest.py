"""Shared fixtures. Importing mtmoe first fixes the Keras environment before TensorFlow loads."""
import json
import os
import subprocess
import sys
from importlib import resources

import pytest
import yaml

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


def _test_config(path):
    """The default config with value thresholds at 0, drops up to 0.25 allowed (a few of the small
    eval split's examples move the metrics by more than the default), a two-trial, one-epoch
    task-weight search, one-epoch warm-started trainings, and Beam in the pipeline's own process
    (worker processes cost more than they bring on a 400-example sample)."""
    config = yaml.safe_load(resources.files("mtmoe.configs").joinpath("default.yaml").read_text())
    for task in config["tasks"]:
        task["min_value"] = 0.0
        task["max_drop"] = 0.25
    config["tuning"] = {"enabled": True, "algorithm": "random", "max_trials": 2, "epochs_per_trial": 1}
    config["training"]["warm_start_epochs"] = 1
    config["pipeline"]["beam_workers"] = 1
    # The packaged schema (curated from the default sample), from wherever the copy is written; the
    # 20-example eval split of a 200-example span moves label shares by more than the default skew.
    from mtmoe.config import load_config

    config["validation"]["schema"] = load_config().validation.schema
    config["validation"]["max_split_skew"] = 0.4
    path.write_text(yaml.safe_dump(config))
    return config


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, cli):
    """`mtmoe run` on a 400-example sample (span 1), 3 epochs, value thresholds at 0 so that the first
    model is blessed and pushed. Its work dir is shared: later tests may add spans and run the
    pipeline there again (`rerun(config, *options)`, or `run_command` to start one themselves), but only
    the Pusher may add versions to its serving folder."""
    root = tmp_path_factory.mktemp("e2e")
    config = _test_config(root / "config.yaml")
    assert cli("data", "sample", "--out", root / "sample", "--num-examples", 400).returncode == 0
    assert cli("data", "convert", "--format", "jsonl", root / "sample", root / "data").returncode == 0

    def run_command(config=root / "config.yaml", *options, data=root / "data"):
        return [MTMOE, "run", "--config", str(config), "--data", str(data),
                "--work-dir", str(root / "work"), "--epochs", "3", *options]

    def rerun(config=root / "config.yaml", *options, data=root / "data", code=0):
        result = subprocess.run(run_command(config, *options, data=data), capture_output=True,
                                text=True, timeout=1500)
        assert result.returncode == code, result.stdout[-3000:] + result.stderr[-5000:]
        return result

    result = rerun()
    return {"root": root, "work": root / "work", "config": config, "stdout": result.stdout,
            "summary": json.loads((root / "work" / "summary.json").read_text()), "rerun": rerun,
            "run_command": run_command}
