"""The request log on its own: sampling, rotation and retention, digit masking, and failures that
never reach the request (a folder that cannot be written, a write that fails)."""
import json
import os
import shutil
import time

import numpy as np
import pytest

from mtmoe.serving.request_log import RequestLog, request_files


def _outputs(n):
    """Serving outputs of n texts, as the serving_default signature gives them."""
    return {"intent_label": np.array([b"pay"] * n), "intent_score": np.linspace(0.5, 0.9, n),
            "intent_in_scope": np.array([True, False] * (n // 2) + [True] * (n % 2))}


def _wait_for(condition, timeout=10.0):
    """The log writes in another process, behind the requests."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _rows(folder):
    return [json.loads(line) for path in request_files(folder) for line in open(path)]


def test_each_sampled_text_is_one_line_with_its_answer(tmp_path):
    log = RequestLog(str(tmp_path / "log"), sample=0.5, seed=3)
    texts = [f"pay bob {i}" for i in range(400)]
    for start in range(0, 400, 8):
        log.offer(texts[start:start + 8], {k: v for k, v in _outputs(8).items()}, version=7)
    log.close()
    rows = _rows(tmp_path / "log")
    assert 150 < len(rows) == log.written < 250  # about half
    assert len({row["text"] for row in rows}) == len(rows)
    assert rows[0]["model_version"] == 7 and rows[0]["intent"]["label"] == "pay"
    scores = np.linspace(0.5, 0.9, 8)
    for row in rows:  # each sampled text with its own answer, not a neighbour's
        j = int(row["text"].split()[-1]) % 8
        assert row["intent"]["score"] == pytest.approx(scores[j])
        assert row["intent"]["in_scope"] is (j % 2 == 0)
    assert log._process.exitcode == 0  # the writer process finished and exited


def test_files_rotate_at_their_size_and_the_oldest_beyond_the_limit_are_deleted(tmp_path):
    folder = tmp_path / "log"
    log = RequestLog(str(folder), max_bytes=2000, max_files=3)
    for i in range(60):
        log.offer([f"text number {i} with some words"], _outputs(1), version=1)
    log.close()
    files = request_files(str(folder))
    assert len(files) == 3 and all(os.path.getsize(f) <= 2000 for f in files)
    assert _rows(folder)[-1]["text"] == "text number 59 with some words"  # the newest kept


def test_files_older_than_keep_days_are_deleted_when_a_new_one_opens(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    old = folder / "requests-20200101T000000-000000000.jsonl"
    old.write_text("{}\n")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    RequestLog(str(folder), keep_days=2).close()
    assert not old.exists() and len(request_files(str(folder))) == 1


def test_digits_are_masked_in_the_text_and_its_tokens(tmp_path):
    log = RequestLog(str(tmp_path / "log"), mask_digits=True)
    outputs = {"tokens": np.array([[b"card", b"4111", b""]]), "slots_tags": np.array([[b"O", b"B-n", b""]]),
               "slots_scores": np.array([[0.9, 0.8, 0.0]])}
    log.offer(["card 4111"], outputs, version=1)
    log.close()
    row, = _rows(tmp_path / "log")
    assert row["text"] == "card ####" and row["slots"]["tokens"] == ["card", "####"]


def test_an_unwritable_folder_or_a_failing_write_turns_logging_off_with_one_warning(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    warnings = []
    log = RequestLog(str(blocked / "log"), warn=warnings.append)
    log.offer(["pay bob"], _outputs(1), version=1)  # ignored, never raises
    log.close()
    assert len(warnings) == 1 and "cannot write" in warnings[0]

    warnings = []  # the writer process's first failure: the folder gone when it opens a file
    log = RequestLog(str(tmp_path / "log"), max_bytes=10, warn=warnings.append)
    log.offer(["pay bob"], _outputs(1), version=1)
    _wait_for(lambda: log.written == 1)
    shutil.rmtree(tmp_path / "log")
    for _ in range(3):
        log.offer(["pay bob"], _outputs(1), version=1)
    _wait_for(lambda: log.paused)
    log.offer(["pay bob"], _outputs(1), version=1)  # ignored
    log.close()
    assert len(warnings) == 1 and "No such file or directory" in warnings[0]
    assert log.paused and log.written == 1


def _served(texts, declined):
    """The serving outputs of every task of the default config for `texts` (tiny: 16 tokens)."""
    n, pad = len(texts), 16
    words = [text.split() for text in texts]
    return {"intent_label": np.array([b"pay"] * n, dtype=object),
            "intent_score": np.full(n, 0.9),
            "intent_in_scope": np.array([i not in declined for i in range(n)]),
            "tokens": np.array([[w.encode() for w in ws] + [b""] * (pad - len(ws)) for ws in words]),
            "slots_tags": np.array([([b"O", b"B-payee", b"B-amount"] + [b"O"] * pad)[:len(ws)]
                                    + [b""] * (pad - len(ws)) for ws in words], dtype=object),
            "slots_scores": np.full((n, pad), 0.9),
            "sentiment_label": np.array([b"neutral"] * n), "sentiment_score": np.full(n, 0.8),
            "signals_labels": np.array([[b"urgent", b"polite"]] * n),
            "signals_scores": np.array([[0.9, 0.1]] * n)}


def test_logged_requests_become_a_draft_to_correct_and_then_a_span(tmp_path, cli, make_tiny_config):
    """The loop: served traffic -> `data draft` (the served answers as labels, each text once,
    declined texts as the out-of-scope label) -> corrected by a person -> `data convert`."""
    import yaml

    config = make_tiny_config()
    next(t for t in config["tasks"] if t["name"] == "intent")["out_of_scope_label"] = "oos"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    texts = [f"pay bob {i} dollars" for i in range(28)]
    texts += ["pay bob 28", " ".join(["word"] * 16)]  # tags the model opened with I-; a cut text
    served = _served(texts, declined={0})
    served["slots_tags"][28][:3] = [b"O", b"I-payee", b"<unknown>"]
    served["intent_label"][5] = b"<unknown>"
    log = RequestLog(str(tmp_path / "log"))
    log.offer(texts, served, version=3)
    log.offer(texts[1:2] + [" "], _served(texts[1:2] + [" "], declined={0}), version=4)  # the
    log.close()  # latest answer of a text counts; a blank text is no example

    result = cli("data", "draft", "--requests", tmp_path / "log", "--out", tmp_path / "draft",
                 "--config", tmp_path / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "wrote 30 distinct logged texts" in result.stdout and "24 train, 3 eval, 3 test" in result.stdout
    assert "intent 29, slots 29, sentiment 30, signals 30" in result.stdout
    rows = {row["text"]: row for split in ("train", "eval", "test")
            for row in map(json.loads, open(tmp_path / "draft" / f"{split}.jsonl"))}
    assert sorted(rows) == sorted(texts)
    assert rows[texts[0]]["intent"] == "oos" and "intent" not in rows[texts[5]]
    assert rows[texts[1]] == {"text": texts[1], "intent": "oos", "tokens": ["pay", "bob", "1", "dollars"],
                              "slots": ["O", "B-payee", "B-amount", "O"], "sentiment": "neutral",
                              "signals": ["urgent"]}
    assert rows[texts[28]]["slots"] == ["O", "B-payee", "O"]
    assert "slots" not in rows[texts[29]] and "tokens" not in rows[texts[29]]
    result = cli("data", "convert", "--format", "jsonl", tmp_path / "draft", tmp_path / "data",
                 "--config", tmp_path / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert os.path.isdir(tmp_path / "data" / "span-1" / "train")

    again = cli("data", "draft", "--requests", tmp_path / "log", "--out", tmp_path / "draft")
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    config["tasks"].append(dict(config["tasks"][0], name="topic", label_field="topic"))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    other = cli("data", "draft", "--requests", tmp_path / "log", "--out", tmp_path / "other",
                "--config", tmp_path / "other.yaml")
    assert other.returncode == 2 and "no logged answer for task(s) topic" in other.stderr
    assert not os.path.exists(tmp_path / "other")


def test_the_writer_outlives_a_ctrl_c_or_sigterm_to_the_process_group_and_writes_every_line(tmp_path):
    """Ctrl-C (and a service manager's SIGTERM) reach the writer process too; the server then
    shuts down and closes the log: the lines of the requests it answered meanwhile are written."""
    import signal

    log = RequestLog(str(tmp_path / "log"))
    log.offer(["pay bob 1"], _outputs(1), version=1)
    _wait_for(lambda: log.written == 1)
    for stop in (signal.SIGINT, signal.SIGTERM):
        os.kill(log._process.pid, stop)
    time.sleep(0.3)
    log.offer(["pay bob 2"], _outputs(1), version=1)
    log.close()
    assert [row["text"] for row in _rows(tmp_path / "log")] == ["pay bob 1", "pay bob 2"]
    assert log.paused is None and log._process.exitcode == 0
