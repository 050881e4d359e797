"""Every kind of bad input `mtmoe data convert` refuses, run through the command's `main` (argument
parsing, the error line, the exit code; in this process, so TensorFlow starts once): exit code 2, one `error:` line naming the file (and line and field where there is one), and no
span folder left behind. Then the two conversions that go through and report: `--bio fix` and
examples longer than text.max_tokens."""
import json
import os
import re

import pytest

from mtmoe.core.formats import read_span_records

@pytest.fixture
def convert(cli):
    return lambda *args: cli("data", "convert", *args)


GOOD = {"text": "pay bob", "intent": "pay", "slots": ["O", "B-payee"]}


def _jsonl(*train_lines):
    """JSONL input whose train split has a good line, then `train_lines` (objects or raw text/bytes)."""
    def line(row):
        return row if isinstance(row, bytes) else (
            row if isinstance(row, str) else json.dumps(row)).encode() + b"\n"
    good = line(GOOD)
    return {"in/train.jsonl": good + b"".join(map(line, train_lines)), "in/dev.jsonl": good,
            "in/test.jsonl": good}


def _slu(seq_in="play jazz\nadd song\n", seq_out="O B-genre\nO O\n", label="Play\nAdd\n"):
    """SLU input whose train split has the given files; dev and test are good."""
    files = {}
    for split in ("train", "dev", "test"):
        bad = split == "train"
        files[f"in/{split}/seq.in"] = seq_in if bad else "play jazz\n"
        files[f"in/{split}/seq.out"] = seq_out if bad else "O B-genre\n"
        files[f"in/{split}/label"] = label if bad else "Play\n"
    return files


def _conll(train):
    good = "pay\tO\nbob\tB-payee\n"
    return {"in/train.conll": train, "in/dev.conll": good, "in/test.conll": good}


# (id, files under the test folder, arguments before IN OUT, what the error line must match)
CASES = [
    ("jsonl-tags-vs-tokens", _jsonl({"text": "pay bob now", "slots": ["O", "B-payee"]}),
     ["--format", "jsonl"], r"in/train\.jsonl:2: field 'slots' has 2 tags for 3 tokens$"),
    ("slu-tags-vs-tokens", _slu(seq_out="O B-genre\nO O O\n"),
     ["--format", "slu"], r"in/train/seq\.out:2: 3 tags for 2 tokens in seq\.in$"),
    ("jsonl-invalid-bio", _jsonl({"text": "pay on friday", "slots": ["O", "O", "I-date"]}),
     ["--format", "jsonl"], r"in/train\.jsonl:2: field 'slots': invalid BIO at token 3 "
                            r"\('I-date' after 'O'\); fix it, or convert with --bio fix$"),
    ("conll-invalid-bio", _conll("pay\tO\n\nfly\tO\nto\tO\nnew\tB-city\nyork\tI-state\n"),
     ["--format", "conll"], r"in/train\.conll:3: field 'slots': invalid BIO at token 4 "
                            r"\('I-state' after 'B-city'\); fix it, or convert with --bio fix$"),
    ("tag-form-even-with-fix", _jsonl({"text": "pay bob", "slots": ["O", "B_payee"]}),
     ["--format", "jsonl", "--bio", "fix"],
     r"in/train\.jsonl:2: field 'slots': invalid tag at token 2 \('B_payee'\); "
     r"tags are O, B-<type> or I-<type>$"),
    ("non-utf8", _jsonl(b'{"text": "caf\xe9"}\n'),
     ["--format", "jsonl"], r"in/train\.jsonl:2: not valid UTF-8 \(byte 0xe9\)$"),
    ("slu-empty-text", _slu(seq_in="play jazz\n\n", seq_out="O B-genre\n\n"),
     ["--format", "slu"], r"in/train/seq\.in:2: empty text$"),
    ("json-syntax", _jsonl('{"text": "pay bob", "intent": "pay"'),
     ["--format", "jsonl"], r"in/train\.jsonl:2: not valid JSON: "),
    ("json-not-an-object", _jsonl('["pay", "bob"]'),
     ["--format", "jsonl"], r"in/train\.jsonl:2: each line must be a JSON object$"),
    ("unknown-label-field", _jsonl({"text": "pay bob", "topic": "money"}),
     ["--format", "jsonl"], r"in/train\.jsonl:2: unknown field\(s\) topic; the config's label "
                            r"fields are intent, slots, sentiment, signals$"),
    ("label-of-wrong-type", _jsonl({"text": "pay bob", "intent": ["pay", "send"]}),
     ["--format", "jsonl"], r"in/train\.jsonl:2: field 'intent' must be one label \(a non-empty "
                            r"string\), not a list$"),
    ("missing-split", {k: v for k, v in _jsonl().items() if "dev" not in k},
     ["--format", "jsonl"], r"in: no eval split found \(expected \{train,dev\|eval,test\}\.jsonl\)$"),
    ("slu-line-counts", _slu(label="Play\n"),
     ["--format", "slu"], r"in/train: seq\.in, seq\.out and label have different line counts "
                          r"\{'seq\.in': 2, 'seq\.out': 2, 'label': 1\}$"),
    ("span-exists", {**_jsonl(), "out/span-1/train/data.tfrecord.gz": b""},
     ["--format", "jsonl", "--span", "1"],
     r"out/span-1: span 1 already exists; spans are never overwritten$"),
]


def _write(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _spans(out):
    """span-<N> folders and half-written (.span-<N>-...) staging folders under the data root."""
    return sorted(name for name in os.listdir(out) if "span-" in name) if out.exists() else []


@pytest.mark.parametrize("files, args, error", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line_exit_2_and_no_span(tmp_path, convert, files, args, error):
    _write(tmp_path, files)
    before = _spans(tmp_path / "out")
    result = convert(*args, tmp_path / "in", tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert re.search(error, errors[0]), errors[0]
    assert _spans(tmp_path / "out") == before
    if not before:
        assert not (tmp_path / "out").exists()  # not even an empty data root


@pytest.mark.parametrize("command", [["data", "convert", "--format", "jsonl", "IN", "OUT"],
                                     ["init", "--format", "jsonl", "--data", "IN", "--out", "OUT"]])
def test_bad_data_is_reported_before_tensorflow_loads(tmp_path, command):
    import subprocess
    import sys

    _write(tmp_path, _jsonl({"text": "", "intent": "pay"}))
    argv = [str(tmp_path / "in") if a == "IN" else str(tmp_path / "out") if a == "OUT" else a
            for a in command]
    script = ("import sys; from mtmoe.cli import main; code = main(sys.argv[1:]); "
              "print('tensorflow' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'in' / 'train.jsonl'}:2: empty text\n"
    assert result.stdout == "False\n"
    assert not (tmp_path / "out").exists()


def test_bio_fix_rewrites_span_opening_i_tags_and_reports_them(tmp_path, convert):
    _write(tmp_path, _jsonl({"text": "pay on friday noon", "slots": ["I-date", "O", "I-date", "I-date"]},
                            {"text": "to bob", "slots": ["O", "I-payee"]}))
    result = convert("--format", "jsonl", "--bio", "fix", tmp_path / "in",
                 tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "train: fixed 3 BIO tags" in result.stdout
    assert "eval: fixed 0 BIO tags" in result.stdout and "have more than" not in result.stdout
    records = [f for _, f in read_span_records(str(tmp_path / "out" / "span-1" / "train"))]
    assert [r["slots"] for r in records] == [
        [b"O", b"B-payee"], [b"B-date", b"O", b"B-date", b"I-date"], [b"O", b"B-payee"]]


def test_examples_longer_than_max_tokens_are_reported_and_written_whole(tmp_path, convert):
    config = tmp_path / "config.yaml"
    config.write_text("tasks:\n  - {name: intent, type: classification, label_field: intent}\n"
                      "  - {name: slots, type: token_tagging, label_field: slots}\n"
                      "text: {max_tokens: 3}\n")
    long = {"text": "pay bob ten dollars now", "intent": "pay"}
    _write(tmp_path, _jsonl(long, long))
    result = convert("--format", "jsonl", "--config", config, tmp_path / "in",
                 tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert ("train: 2 of 3 examples have more than 3 tokens; the pipeline keeps the first 3 "
            "(text.max_tokens)") in result.stdout.splitlines()
    assert "eval:" not in result.stdout and "test:" not in result.stdout
    texts = [f["text"] for _, f in read_span_records(str(tmp_path / "out" / "span-1" / "train"))]
    assert texts[1] == [b"pay bob ten dollars now"]
