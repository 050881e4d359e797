"""The `mtmoe` command's error contract, through `main()` in this process: one line naming what to
fix, exit code 2, nothing written."""
import os


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
    # Each bad input convert refuses is a row of tests/mtmoe/test_bad_inputs.py.
    result = cli("data", "convert", "--help")
    assert result.returncode == 0
    assert "--bio {reject,fix}" in result.stdout and "text.max_tokens" in result.stdout


def test_sample_then_convert_makes_a_span(tmp_path, cli):
    assert cli("data", "sample", "--out", str(tmp_path / "s"), "--num-examples", "50").returncode == 0
    result = cli("data", "convert", "--format", "jsonl", str(tmp_path / "s"), str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    assert "{'train': 40, 'eval': 5, 'test': 5}" in result.stdout
    assert sorted(os.listdir(tmp_path / "d" / "span-1")) == ["eval", "test", "train"]


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
