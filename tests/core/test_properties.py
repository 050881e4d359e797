"""Properties of the converters on generated data: JSONL survives conversion unchanged, `--bio fix`
gives valid BIO that means the same spans, and tags stay aligned with tokens through the pipeline's
tokenizer and its padding / truncation to max_tokens."""
import contextlib
import json
import os
import tempfile

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from hypothesis import given, settings, strategies as st

from mtmoe.core.config import TaskConfig, TextConfig
from mtmoe.core.errors import UserError
from mtmoe.core.formats import BioCheck, read_jsonl, read_span_records, read_splits, write_span
from mtmoe.core.metrics import bio_spans
from mtmoe.core.tasks import UNLABELLED
from mtmoe.trainer.heads import head_of
from mtmoe.trainer.text import tokenize

TYPES = ["date", "city-name", "名前", "ζώνη"]
TAG_VOCABULARY = ["O"] + [f"{prefix}-{kind}" for kind in TYPES for prefix in "BI"]
# Printable and without whitespace: letters, marks, numbers, punctuation and symbols of any script.
TOKENS = st.lists(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl",
                                                             "Zp")), min_size=1, max_size=6),
                  min_size=1, max_size=10)
LABELS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)


@st.composite
def bio_tags(draw, n):
    """A valid BIO sequence of n tags: an I-x only right after a B-x or I-x."""
    tags = []
    for _ in range(n):
        options = ["O"] + [f"B-{kind}" for kind in TYPES]
        if tags and tags[-1] != "O":
            options.append("I-" + tags[-1][2:])
        tags.append(draw(st.sampled_from(options)))
    return tags


def _valid_bio(tags):
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous not in ("B-" + tag[2:], tag):
            return False
        previous = tag
    return True


@st.composite
def jsonl_records(draw):
    """(what a JSONL line holds, the tf.Example features the conversion must give back)."""
    tokens = draw(TOKENS)
    tags = draw(bio_tags(len(tokens)))
    if draw(st.booleans()):
        line = {"tokens": tokens}
    else:  # any whitespace between the words, U+2028 (a line separator to str.splitlines) too
        line = {"text": draw(st.sampled_from([" ", "  ", "\t", "\u3000", "\u2028"])).join(tokens)}
    line["slots"] = tags
    features = {"text": [" ".join(tokens).encode()], "slots": [t.encode() for t in tags]}
    intent = draw(st.none() | LABELS)
    if intent is not None:
        line["intent"] = intent
        features["intent"] = [intent.encode()]
    signals = draw(st.none() | st.lists(LABELS, max_size=3))
    if signals is not None:
        line["signals"] = signals
        features["signals"] = [s.encode() for s in signals]
    return line, features


@settings(max_examples=25, deadline=None)
@given(st.lists(jsonl_records(), min_size=1, max_size=4), st.booleans())
def test_jsonl_round_trip_gives_back_tokens_tags_and_labels(records, ascii_only):
    with tempfile.TemporaryDirectory() as root:
        in_dir = os.path.join(root, "in")
        os.mkdir(in_dir)
        for split in ("train", "dev", "test"):
            with open(os.path.join(in_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(line, ensure_ascii=ascii_only) + "\n" for line, _ in records)
        path, _ = write_span(read_splits("jsonl", in_dir, ["intent", "slots", "signals"], ["slots"]),
                             os.path.join(root, "data"))
        for split in ("train", "eval", "test"):
            assert [f for _, f in read_span_records(os.path.join(path, split))] == [
                features for _, features in records]


RAW_TAGS = st.lists(st.sampled_from(["O", "B-date", "I-date", "B-名前", "I-名前"]), max_size=12)


@settings(max_examples=300)
@given(RAW_TAGS)
def test_fix_gives_valid_bio_with_the_same_spans_and_is_idempotent(tags):
    check = BioCheck("fix")
    fixed = check(tags, "f:1", "slots")
    assert _valid_bio(fixed)
    assert bio_spans(fixed) == bio_spans(tags)
    assert check.fixed == sum(a != b for a, b in zip(tags, fixed))
    assert BioCheck("fix")(fixed, "f:1", "slots") == fixed


@settings(max_examples=300)
@given(RAW_TAGS)
def test_reject_accepts_exactly_what_fix_leaves_unchanged(tags):
    unchanged = BioCheck("fix")(tags, "f:1", "slots") == tags
    try:
        BioCheck("reject")(tags, "f:1", "slots")
        accepted = True
    except UserError as e:
        assert "invalid BIO" in str(e)
        accepted = False
    assert accepted == unchanged == _valid_bio(tags)


@settings(max_examples=200)
@given(st.integers(0, 4).flatmap(bio_tags), st.text(max_size=6), st.sampled_from(["reject", "fix"]))
def test_a_tag_of_another_form_is_refused_in_both_modes(tags, odd, mode):
    if odd == "O" or (odd[:2] in ("B-", "I-") and odd[2:] and not any(c.isspace() for c in odd)):
        return  # a well-formed tag
    with pytest.raises(UserError, match=f"f:1: field 'slots': invalid tag at token {len(tags) + 1} "
                                        r".*tags are O, B-<type> or I-<type>"):
        BioCheck(mode)(tags + [odd], "f:1", "slots")


class _KnownTagVocabulary:
    """Stands in for tft in an eager call of a task type's `transform`: tft.vocabulary needs a Beam
    analysis, so the vocabulary comes from a file, which tft.apply_vocabulary reads eagerly."""

    def __init__(self, path):
        self.path = path

    def vocabulary(self, values, vocab_filename):
        return tf.constant(self.path)

    apply_vocabulary = staticmethod(tft.apply_vocabulary)


@contextlib.contextmanager
def _global_graph_left_clean():
    """tft.apply_vocabulary called eagerly files its table under the global graph's collections,
    which every later tf.function inherits: TFT's own tracing (a Transform in a later test) then
    trips on the eager tensors there. Clear what the block added."""
    graph = tf.compat.v1.get_default_graph()
    before = set(graph.get_all_collection_keys())
    try:
        yield
    finally:
        for key in set(graph.get_all_collection_keys()) - before:
            graph.clear_collection(key)


@pytest.fixture(scope="module")
def tag_tft(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocabulary") / "slots_labels"
    path.write_text("".join(tag + "\n" for tag in TAG_VOCABULARY), encoding="utf-8")
    return _KnownTagVocabulary(str(path))


@settings(max_examples=40, deadline=None)
@given(TOKENS, st.integers(1, 8), st.data())
def test_tokenizer_gives_back_the_converted_tokens_and_tags_stay_aligned(tag_tft, tokens, max_tokens,
                                                                         data):
    tags = data.draw(bio_tags(len(tokens)))
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "train.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"tokens": tokens, "slots": tags}, ensure_ascii=False) + "\n")
        [record] = read_jsonl(path, ["slots"], ["slots"], BioCheck())

    split = tokenize(tf.constant([record["text"]]))
    assert [t.decode() for t in split[0].numpy()] == tokens
    # As preprocessing_fn pads / truncates the tokens and the tags of a token-tagging task.
    padded = split.to_tensor(default_value="", shape=[None, max_tokens])[0].numpy()
    task = TaskConfig("slots", "token_tagging", "slots")
    with _global_graph_left_clean():
        ids = head_of(task).transform(task, tf.ragged.constant([record["slots"]]).to_sparse(),
                                        tag_tft, TextConfig(max_tokens=max_tokens))[0].numpy()
    kept = min(len(tokens), max_tokens)
    assert [t.decode() for t in padded] == tokens[:kept] + [""] * (max_tokens - kept)
    assert ids.tolist() == ([TAG_VOCABULARY.index(t) for t in tags[:kept]]
                            + [UNLABELLED] * (max_tokens - kept))
