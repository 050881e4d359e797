"""`mtmoe init`: a config (and its schema) read off a dataset, in each input format."""
import json

import pytest

from mtmoe.core.config import load_config

pytestmark = pytest.mark.slow  # curating the schema runs TFDV

ROWS = [
    {"text": "send 5 dollars to bob", "intent": "pay", "slots": ["O", "B-amount", "I-amount", "O", "B-name"],
     "signals": ["urgent", "polite"], "mood": "calm"},
    {"text": "where is my card", "intent": "card", "slots": ["O", "O", "O", "O"], "signals": ["question"]},
    {"text": "pay alice now please", "intent": "pay", "slots": ["O", "B-name", "O", "O"],
     "signals": ["polite"], "mood": "glad"},
]


def _jsonl(folder):
    folder.mkdir()
    for split in ("train", "eval", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS * 3))
    return folder


def _slu(folder):
    for split in ("train", "dev", "test"):
        (folder / split).mkdir(parents=True)
        (folder / split / "seq.in").write_text("".join(r["text"] + "\n" for r in ROWS))
        (folder / split / "seq.out").write_text("".join(" ".join(r["slots"]) + "\n" for r in ROWS))
        (folder / split / "label").write_text("".join(r["intent"] + "\n" for r in ROWS))
    return folder


def _conll(folder):
    folder.mkdir()
    for split in ("train", "eval", "test"):
        (folder / f"{split}.conll").write_text("\n".join(
            "".join(f"{token}\t{tag}\n" for token, tag in zip(r["text"].split(), r["slots"]))
            for r in ROWS))
    return folder


@pytest.mark.parametrize("fmt, make, expected", [
    ("jsonl", _jsonl, {"intent": "classification", "mood": "classification",
                       "signals": "multilabel", "slots": "token_tagging"}),
    ("slu", _slu, {"intent": "classification", "slots": "token_tagging"}),
    ("conll", _conll, {"slots": "token_tagging"}),
])
def test_init_infers_each_task_type_and_writes_a_config_the_pipeline_takes(tmp_path, cli, fmt,
                                                                           make, expected):
    data = make(tmp_path / "in")
    out = tmp_path / "configs" / "new.yaml"
    result = cli("init", "--data", data, "--format", fmt, "--out", out)
    assert result.returncode == 0, result.stderr
    config = load_config(str(out))
    assert {task.name: task.type for task in config.tasks} == expected
    # Thresholds over the no-skill answer (tests/core/test_init_inference.py checks the values).
    assert all(0 < task.min_value < 1 and 0 < task.max_drop <= 0.05 for task in config.tasks)
    assert config.text.max_tokens == 8  # the shortest window: every text here has at most 5 tokens
    assert (tmp_path / "configs" / "new.schema.pbtxt").is_file()
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == ["new.schema.pbtxt", "new.yaml"]
    for name, kind in expected.items():
        assert f"task {name}: {kind} (" in result.stdout
    # The config and its schema take the same data through conversion.
    converted = cli("data", "convert", "--format", fmt, data, tmp_path / "data", "--config", out)
    assert converted.returncode == 0, converted.stderr


def test_init_never_overwrites_a_config(tmp_path, cli):
    data = _jsonl(tmp_path / "in")
    out = tmp_path / "mine.yaml"
    out.write_text("tasks: []\n")
    result = cli("init", "--data", data, "--format", "jsonl", "--out", out)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert out.read_text() == "tasks: []\n"


def test_a_field_mixing_strings_and_lists_is_named(tmp_path, cli):
    data = tmp_path / "in"
    data.mkdir()
    rows = [{"text": "a b", "intent": "x"}, {"text": "c d", "intent": ["x", "y"]}]
    for split in ("train", "eval", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("init", "--data", data, "--format", "jsonl", "--out", tmp_path / "c.yaml")
    assert result.returncode == 2
    assert f"{data / 'train.jsonl'}: field 'intent': values mix strings and lists" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_init_sets_out_of_scope_answers_and_convert_refuses_a_label_the_data_lacks(tmp_path, cli):
    """A classification field with an `oos` value gets it as its out-of-scope label, another
    (`mood`) a rejection threshold alone; --out-of-scope names any other value. A config naming an
    out-of-scope label that the data lacks: convert says so in one line."""
    rows = ROWS + [{"text": "what is the weather", "intent": "oos", "slots": ["O"] * 4,
                    "signals": ["question"], "mood": "calm"}]
    data = tmp_path / "in"
    data.mkdir()
    for split in ("train", "eval", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows * 3))
    result = cli("init", "--data", data, "--format", "jsonl", "--out", tmp_path / "c.yaml")
    assert result.returncode == 0, result.stderr
    tasks = {task.name: task for task in load_config(str(tmp_path / "c.yaml")).tasks}
    assert (tasks["intent"].out_of_scope_label, tasks["intent"].reject_below) == ("oos", "auto")
    assert (tasks["mood"].out_of_scope_label, tasks["mood"].reject_below) == ("", "auto")
    assert "task intent: out of scope when labelled 'oos' or" in result.stdout
    named = cli("init", "--data", data, "--format", "jsonl", "--out", tmp_path / "n.yaml",
                "--out-of-scope", "calm")
    assert named.returncode == 0, named.stderr
    assert load_config(str(tmp_path / "n.yaml")).tasks[1].out_of_scope_label == "calm"
    missing = cli("init", "--data", data, "--format", "jsonl", "--out", tmp_path / "m.yaml",
                  "--out-of-scope", "none_of_these")
    assert missing.returncode == 2 and "--out-of-scope none_of_these: no classification" in missing.stderr

    (tmp_path / "c.yaml").write_text((tmp_path / "c.yaml").read_text().replace(
        "out_of_scope_label: oos", "out_of_scope_label: OOS"))
    converted = cli("data", "convert", "--format", "jsonl", data, tmp_path / "d",
                    "--config", tmp_path / "c.yaml")
    assert converted.returncode == 2
    assert (f"error: {data}: task intent: out_of_scope_label 'OOS' never occurs in the training "
            "split") in converted.stderr
    assert not (tmp_path / "d").exists()
