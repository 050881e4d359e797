import json

from mtmoe.core.sample import write_sample


def _rows(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_sample_is_deterministic_and_split_80_10_10(tmp_path):
    counts = write_sample(str(tmp_path / "a"), num_examples=200, seed=3)
    write_sample(str(tmp_path / "b"), num_examples=200, seed=3)
    assert counts == {"train": 160, "eval": 20, "test": 20}
    for split in counts:
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == \
               (tmp_path / "b" / f"{split}.jsonl").read_bytes()


def test_sample_tags_align_with_tokens_and_some_labels_are_missing(tmp_path):
    write_sample(str(tmp_path), num_examples=400, seed=5)
    rows = _rows(tmp_path, "train")
    assert all(len(r["tokens"]) == len(r["slots"]) and r["text"] == " ".join(r["tokens"]) for r in rows)
    assert len({r["intent"] for r in rows}) >= 6
    assert {t[2:] for r in rows for t in r["slots"] if t != "O"} >= {"amount", "payee", "date"}
    with_sentiment = sum("sentiment" in r for r in rows) / len(rows)
    with_signals = sum("signals" in r for r in rows) / len(rows)
    assert 0.4 < with_sentiment < 0.8 and 0.5 < with_signals < 0.9
    assert any(r["text"] != r["text"].lower() for r in rows)  # casing varies
