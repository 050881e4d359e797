"""The `mtmoe` command's error contract, through `main()` in this process: one line naming what to
fix, exit code 2, nothing written."""
import json
import os
import re
import subprocess
import sys
from importlib import resources

import pytest
import yaml


def _assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_run_with_empty_data_directory_fails_before_anything_runs(tmp_path, cli):
    (tmp_path / "data").mkdir()
    result = cli("run", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"))
    _assert_user_error(result, str(tmp_path / "data"), "no span-<N> folders")
    assert not (tmp_path / "work" / "serving_model").exists()


def test_run_with_missing_data_directory(tmp_path, cli):
    result = cli("run", "--data", str(tmp_path / "nope"), "--work-dir", str(tmp_path / "work"))
    _assert_user_error(result, "nope", "no span-<N> folders")


def test_run_with_unknown_task_type(tmp_path, cli):
    config = tmp_path / "bad.yaml"
    config.write_text("tasks:\n  - {name: a, type: ranking, label_field: a}\n")
    result = cli("run", "--config", str(config), "--work-dir", str(tmp_path / "work"))
    _assert_user_error(result, "bad.yaml", "tasks[0].type", "ranking")
    assert not (tmp_path / "work").exists()


def test_run_with_label_field_the_data_lacks(tmp_path, write_jsonl, cli):
    row = {"text": "pay bob", "intent": "pay"}
    folder = write_jsonl({"train": [row], "eval": [row], "test": [row]})
    config = tmp_path / "c.yaml"
    config.write_text("tasks:\n  - {name: intent, type: classification, label_field: intent}\n"
                      "  - {name: mood, type: classification, label_field: mood}\n")
    assert cli("data", "convert", "--format", "jsonl", "--config", str(config), folder,
                 str(tmp_path / "data")).returncode == 0
    result = cli("run", "--config", str(config), "--data", str(tmp_path / "data"),
                   "--work-dir", str(tmp_path / "work"))
    _assert_user_error(result, "span-1/train", "field 'mood'", "task 'mood'")
    assert not (tmp_path / "work" / "serving_model").exists()


def test_convert_help_names_the_bio_modes_and_the_length_report(cli):
    # Each bad input convert refuses is a row of tests/core/test_bad_inputs.py.
    result = cli("data", "convert", "--help")
    assert result.returncode == 0
    assert "--bio {reject,fix}" in result.stdout and "text.max_tokens" in result.stdout


def test_sample_then_convert_makes_a_span_and_prints_nothing_of_tensorflows(tmp_path, cli,
                                                                           cli_process):
    assert cli("data", "sample", "--out", str(tmp_path / "s"), "--num-examples", "50").returncode == 0
    result = cli_process("data", "convert", "--format", "jsonl", tmp_path / "s", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no CUDA factory lines, no absl warnings
    assert "{'train': 40, 'eval': 5, 'test': 5}" in result.stdout
    # source.json is the fingerprint that refuses converting the same examples twice.
    assert sorted(os.listdir(tmp_path / "d" / "span-1")) == ["eval", "source.json", "test", "train"]


def test_converting_the_same_examples_again_is_refused_unless_asked(tmp_path, cli):
    assert cli("data", "sample", "--out", tmp_path / "s", "--num-examples", "50").returncode == 0
    assert cli("data", "sample", "--out", tmp_path / "t", "--num-examples", "50",
               "--seed", "2").returncode == 0
    convert = ("data", "convert", "--format", "jsonl")
    assert cli(*convert, tmp_path / "s", tmp_path / "d").returncode == 0
    again = cli(*convert, tmp_path / "s", tmp_path / "d")
    _assert_user_error(again, f"{tmp_path / 's'}: the same examples as {tmp_path / 'd'}/span-1",
                       "--allow-duplicate")
    assert sorted(os.listdir(tmp_path / "d")) == ["span-1"]
    assert cli(*convert, tmp_path / "t", tmp_path / "d").returncode == 0  # other examples: span 2
    assert cli(*convert, tmp_path / "s", tmp_path / "d", "--allow-duplicate").returncode == 0
    assert sorted(os.listdir(tmp_path / "d")) == ["span-1", "span-2", "span-3"]


def test_predict_without_a_model_says_how_to_get_one(tmp_path, cli):
    result = cli("predict", "--model", str(tmp_path), "hello")
    _assert_user_error(result, "run `mtmoe run` first")


def test_help_lists_the_commands(cli):
    result = cli("--help")
    assert result.returncode == 0
    for command in ("run", "predict", "data", "schedule", "compile"):
        assert command in result.stdout


def test_the_console_script_calls_main_and_exits_with_its_code(tmp_path, cli_process):
    """The tests above go through `main()` in this process; this one runs the installed `mtmoe`
    script as a user does, once for success and once for a refused input."""
    result = cli_process("--help")
    assert result.returncode == 0 and "compile" in result.stdout
    result = cli_process("run", "--data", tmp_path / "nope", "--work-dir", tmp_path / "work")
    _assert_user_error(result, "nope", "no span-<N> folders")


def test_a_failing_step_shows_its_error_and_the_log_path_and_logs_the_rest(tmp_path, cli,
                                                                            monkeypatch):
    """Everything TensorFlow or TFX prints goes to the run's log; the console gets the failed step,
    its error and where the log is."""
    from absl import logging as absl_logging
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    def broken_run(self, pipeline):
        absl_logging.info("Component Transform is running.")
        print("W0000 what TensorFlow prints")
        raise RuntimeError("boom")

    monkeypatch.setattr(LocalDagRunner, "run", broken_run)
    result = cli("run", "--work-dir", tmp_path / "work")
    assert result.returncode == 1
    assert "error: Transform failed: RuntimeError: boom" in result.stderr
    log = re.search(r"full log: (\S+)", result.stderr).group(1)
    assert os.path.dirname(log) == str(tmp_path / "work" / "logs")
    with open(log) as f:
        text = f.read()
    assert "W0000 what TensorFlow prints" in text and "Traceback" in text
    assert "what TensorFlow prints" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [
    ["run", "--config", "{bad}"],
    ["tune", "--config", "{bad}"],
    ["run", "--data", "{missing}"],
    ["data", "convert", "--format", "jsonl", "{missing}", "{out}"],
    ["data", "convert", "--format", "jsonl", "{empty}", "{out}", "--config", "{bad}"],
    ["history"],                                   # no run recorded
    ["report"],
    ["predict", "--model", "{missing}", "hello"],  # no model
    ["predict", "--server", "http://127.0.0.1:1", "hello"],  # no server
    ["versions", "--server", "http://127.0.0.1:1"],
    ["serve", "--serving-dir", "{missing}"],
    ["export-check", "{missing}"],
])
def test_bad_input_is_reported_without_loading_tensorflow(tmp_path, command):
    """A config, data or missing-model error needs no TensorFlow: the one-line error comes at once,
    with no CUDA lines, and nothing is written."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - {name: intent, type: clasification, label_field: intent}\n")
    (tmp_path / "empty").mkdir()
    args = [a.format(bad=bad, missing=tmp_path / "missing", out=tmp_path / "out",
                     empty=tmp_path / "empty") for a in command] + ["--work-dir", tmp_path / "work"] * (
        command[0] in ("run", "tune", "history", "report"))
    code = ("import sys; from mtmoe.cli import main; code = main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules, code)")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "empty"]


WORKERS = ["127.0.0.1:1", "127.0.0.1:2"]


@pytest.mark.parametrize("command, tf_config, error", [
    ("run", None, "training.distribution is multi_worker but TF_CONFIG is not set"),
    ("run", {"cluster": {"worker": WORKERS}, "task": {"type": "worker", "index": 1}},
     "TF_CONFIG makes this process worker 1: start the workers other than the chief with "
     "`mtmoe train-worker`"),
    ("train-worker", {"cluster": {"worker": WORKERS}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG makes this process worker 0: the chief (task index 0) runs `mtmoe run`"),
    ("train-worker", {"cluster": {"worker": WORKERS}, "task": {"type": "worker", "index": 2}},
     "TF_CONFIG: task worker 2 is not in its cluster"),
    ("train-worker", "{not json", "TF_CONFIG is not a cluster spec"),
])
def test_a_wrong_multi_worker_setup_is_reported_without_loading_tensorflow(
        tmp_path, command, tf_config, error):
    from mtmoe.core.config import load_config

    config = yaml.safe_load(resources.files("mtmoe.configs").joinpath("default.yaml").read_text())
    config["training"]["distribution"] = "multi_worker"
    config["validation"]["schema"] = load_config().validation.schema
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config if isinstance(tf_config, str) else json.dumps(tf_config)
    code = ("import sys; from mtmoe.cli import main; code = main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules, code)")
    result = subprocess.run([sys.executable, "-c", code, command, "--config", tmp_path / "multi.yaml",
                             "--work-dir", tmp_path / "work"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {error}"), result.stderr
    assert not (tmp_path / "work").exists()


def test_train_worker_needs_a_multi_worker_config(cli):
    result = cli("train-worker")
    assert result.returncode == 2
    assert "training.distribution is 'none'; `mtmoe train-worker` joins a multi_worker training" in \
        result.stderr
