import os

import pytest

from mtmoe.core.errors import UserError
from mtmoe.core.formats import (SPLITS, BioCheck, check_latest_span, read_span_records, read_splits,
                                write_span, existing_spans)

LABELS = ["intent", "slots", "sentiment", "signals"]
TAGS = ["slots"]
ROW = {"text": "pay $5 to bob", "intent": "pay", "slots": ["O", "B-amount", "O", "B-payee"]}


def _splits(row=ROW):
    return {"train": [row, {"tokens": ["hi", "there"], "intent": "greet", "slots": ["O", "O"],
                            "sentiment": "positive", "signals": ["polite", "question"]}],
            "eval": [row], "test": [row]}


def _convert_jsonl(write_jsonl, tmp_path, splits):
    return write_span(read_splits("jsonl", write_jsonl(splits), LABELS, TAGS), str(tmp_path / "data"))


def test_jsonl_to_span_keeps_labels_and_leaves_missing_ones_out(write_jsonl, tmp_path):
    path, counts = _convert_jsonl(write_jsonl, tmp_path, _splits())
    assert counts == {"train": 2, "eval": 1, "test": 1}
    assert path.endswith("span-1")
    records = [f for _, f in read_span_records(os.path.join(path, "train"))]
    assert records[0] == {"text": [b"pay $5 to bob"], "intent": [b"pay"],
                          "slots": [b"O", b"B-amount", b"O", b"B-payee"]}
    assert records[1]["text"] == [b"hi there"]
    assert records[1]["signals"] == [b"polite", b"question"]


def test_next_span_is_numbered_after_the_last_and_never_overwritten(write_jsonl, tmp_path):
    _convert_jsonl(write_jsonl, tmp_path, _splits())
    path, _ = _convert_jsonl(write_jsonl, tmp_path, _splits())
    assert path.endswith("span-2")
    with pytest.raises(UserError, match="span 2 already exists"):
        write_span(read_splits("jsonl", write_jsonl(_splits()), LABELS, TAGS),
                   str(tmp_path / "data"), span=2)


@pytest.mark.parametrize("bad_line, message", [
    ('{"text": "a b", "slots": ["O"]}', r"train\.jsonl:2: field 'slots' has 1 tags for 2 tokens"),
    ('{"text": "a b", "intent": "x"', r"train\.jsonl:2: not valid JSON"),
    ('{"text": "a b", "topic": "x"}', r"train\.jsonl:2: unknown field\(s\) topic"),
    ('{"text": "   "}', r"train\.jsonl:2: empty text"),
    ('{"text": "a", "slots": "O"}', r"train\.jsonl:2: field 'slots' must be a list of tags"),
])
def test_jsonl_errors_name_file_and_line_and_write_nothing(write_jsonl, tmp_path, bad_line, message):
    splits = _splits()
    splits["train"] = [ROW, bad_line]
    with pytest.raises(UserError, match=message):
        _convert_jsonl(write_jsonl, tmp_path, splits)
    assert existing_spans(str(tmp_path / "data")) == []
    assert os.listdir(tmp_path / "data") == []


def test_non_utf8_input_names_the_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"train\.jsonl:2: not valid UTF-8"):
        write_span(read_splits("jsonl", str(folder), LABELS, TAGS), str(tmp_path / "data"))


def _slu(tmp_path, out_line="O B-x"):
    for split in ("train", "dev", "test"):
        folder = tmp_path / "slu" / split
        folder.mkdir(parents=True)
        (folder / "seq.in").write_text("play jazz\nadd song\n")
        (folder / "seq.out").write_text(f"O B-genre\n{out_line}\n")
        (folder / "label").write_text("PlayMusic\nAddToPlaylist\n")
    return str(tmp_path / "slu")


def test_slu_layout_becomes_intent_and_slots(tmp_path):
    path, counts = write_span(read_splits("slu", _slu(tmp_path), LABELS, TAGS), str(tmp_path / "d"))
    assert counts == {"train": 2, "eval": 2, "test": 2}
    first = next(read_span_records(os.path.join(path, "eval")))[1]
    assert first == {"text": [b"play jazz"], "intent": [b"PlayMusic"], "slots": [b"O", b"B-genre"]}


def test_slu_tag_count_mismatch_names_seq_out_line(tmp_path):
    with pytest.raises(UserError, match=r"train/seq\.out:2: 3 tags for 2 tokens in seq\.in"):
        write_span(read_splits("slu", _slu(tmp_path, "O B-x I-x"), LABELS, TAGS), str(tmp_path / "d"))


def test_slu_invalid_bio_names_the_seq_out_line(tmp_path):
    with pytest.raises(UserError, match=r"train/seq\.out:2: field 'slots': invalid BIO at token 1 "
                                        r"\('I-x' at the start\); fix it, or convert with --bio fix"):
        write_span(read_splits("slu", _slu(tmp_path, "I-x O"), LABELS, TAGS), str(tmp_path / "d"))


def _conll(tmp_path, body):
    folder = tmp_path / "conll"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.conll").write_text(body)
    return str(folder)


def test_conll_sequences_are_split_on_blank_lines(tmp_path):
    folder = _conll(tmp_path, "pay\tO\nbob\tB-payee\n\nhi\tO\n")
    path, counts = write_span(read_splits("conll", folder, LABELS, TAGS, tags_field="slots"),
                              str(tmp_path / "d"))
    assert counts["train"] == 2
    records = [f for _, f in read_span_records(os.path.join(path, "train"))]
    assert records == [{"text": [b"pay bob"], "slots": [b"O", b"B-payee"]},
                       {"text": [b"hi"], "slots": [b"O"]}]


def test_bio_fix_rewrites_and_counts_per_split(tmp_path):
    folder = _conll(tmp_path, "fly\tO\nto\tI-city\n\nnew\tI-city\nyork\tI-city\n")
    bio = {split: BioCheck("fix") for split in SPLITS}
    path, _ = write_span(read_splits("conll", folder, LABELS, TAGS, bio=bio), str(tmp_path / "d"))
    assert {split: check.fixed for split, check in bio.items()} == {"train": 2, "eval": 2, "test": 2}
    assert [f["slots"] for _, f in read_span_records(os.path.join(path, "test"))] == [
        [b"O", b"B-city"], [b"B-city", b"I-city"]]


def test_conll_line_without_tag_is_reported(tmp_path):
    folder = _conll(tmp_path, "pay\tO\nbob\n")
    with pytest.raises(UserError, match=r"train\.conll:2: expected 'token<TAB>tag'"):
        write_span(read_splits("conll", folder, LABELS, TAGS), str(tmp_path / "d"))


def test_missing_split_is_reported(write_jsonl):
    folder = write_jsonl({"train": [ROW], "test": [ROW]})
    with pytest.raises(UserError, match="no eval split found"):
        read_splits("jsonl", folder, LABELS, TAGS)


def test_check_latest_span_names_a_label_field_the_data_lacks(write_jsonl, tmp_path, default_tasks):
    splits = _splits(ROW)
    splits["train"] = [ROW]
    _convert_jsonl(write_jsonl, tmp_path, splits)
    with pytest.raises(UserError, match=r"span-1/train: no example has field 'sentiment' "
                                        r"\(label of task 'sentiment'\)"):
        check_latest_span(str(tmp_path / "data"), default_tasks)


def test_check_latest_span_accepts_complete_data(write_jsonl, tmp_path, default_tasks):
    path, _ = _convert_jsonl(write_jsonl, tmp_path, _splits())
    assert check_latest_span(str(tmp_path / "data"), default_tasks) == path


def test_check_latest_span_rejects_an_empty_data_root(tmp_path, default_tasks):
    with pytest.raises(UserError, match="no span-<N> folders"):
        check_latest_span(str(tmp_path), default_tasks)
