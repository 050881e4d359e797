import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from mtmoe.core.metrics import (add_nested_counts, best_threshold, bio_spans, f1_from_counts,
                                length_bucket_names, multilabel_counts, span_counts,
                                span_counts_by_type, span_f1)


def test_spans_follow_seqeval_get_entities_example():
    # seqeval README: get_entities(['B-PER', 'I-PER', 'O', 'B-LOC']) == [('PER', 0, 1), ('LOC', 3, 3)]
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}


def test_span_f1_matches_seqeval_readme_example():
    # seqeval README: f1_score / precision_score / recall_score of these are all 0.50.
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = span_f1(y_true, y_pred)
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_span_needs_type_and_both_boundaries():
    gold = [["B-date", "I-date", "O", "B-amount"]]
    assert span_f1(gold, [["B-date", "O", "O", "B-amount"]])["f1"] == 0.5      # end differs
    assert span_f1(gold, [["B-time", "I-time", "O", "B-amount"]])["f1"] == 0.5  # type differs
    assert span_f1(gold, gold)["f1"] == 1.0


def test_i_tag_opens_a_chunk_like_conlleval():
    assert bio_spans(["I-PER", "I-PER", "O"]) == {("PER", 0, 2)}
    assert bio_spans(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}
    assert bio_spans(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}
    assert bio_spans(["O", "", ""]) == set()


def test_no_spans_gives_zero_not_division_error():
    assert span_f1([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert f1_from_counts({}) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_multilabel_counts_threshold_at_half():
    assert multilabel_counts([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1]) == {"tp": 1, "fp": 1, "fn": 1}


def test_the_best_threshold_is_the_one_with_the_best_micro_f1_on_labelled_rows():
    gold = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [-1, -1]])
    # Every gold label scores 0.3-0.4 and no other label above 0.2: 0.30 catches all, nothing else.
    scores = np.array([[0.35, 0.1], [0.3, 0.2], [0.1, 0.4], [0.2, 0.15], [0.9, 0.9]])
    assert best_threshold(gold, scores) == 0.3
    assert f1_from_counts(multilabel_counts(gold[:4], scores[:4], 0.3))["f1"] == 1.0
    # Ties go to the threshold nearest 0.5: any of 0.45-0.95 gets this one right.
    assert best_threshold(np.array([[1, 0]]), np.array([[0.99, 0.01]])) == 0.5
    assert best_threshold(np.full((2, 3), -1), np.zeros((2, 3))) == 0.5  # nothing labelled


def test_span_counts_by_type_split_the_micro_counts():
    gold = ["B-date", "I-date", "O", "B-amount", "B-city"]
    predicted = ["B-date", "O", "O", "B-amount", "B-town"]
    by_type = span_counts_by_type(gold, predicted)
    assert by_type == {"date": {"tp": 0, "fp": 1, "fn": 1}, "amount": {"tp": 1, "fp": 0, "fn": 0},
                       "city": {"tp": 0, "fp": 0, "fn": 1}, "town": {"tp": 0, "fp": 1, "fn": 0}}
    assert add_nested_counts({}, {"all": span_counts(gold, predicted)}) == \
        {"all": {key: sum(c[key] for c in by_type.values()) for key in ("tp", "fp", "fn")}}


def test_length_bucket_names_cover_every_count():
    assert length_bucket_names([5, 10, 20]) == ["<=5", "6-10", "11-20", ">20"]
    assert length_bucket_names([3]) == ["<=3", ">3"]


_TAGS = st.sampled_from(["O", "B-a", "I-a", "B-b", "I-b", "B-time_range", "I-time_range"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_TAGS, max_size=12), min_size=1, max_size=6), st.data())
def test_span_counting_agrees_with_seqeval_on_any_bio_sequences(gold, data):
    """conlleval's reading, as seqeval implements it, on well- and ill-formed sequences alike (an I-x
    that follows O or another type opens a span)."""
    predicted = [data.draw(st.lists(_TAGS, min_size=len(g), max_size=len(g))) for g in gold]
    for tags in gold + predicted:
        assert bio_spans(tags) == {(kind, start, end + 1) for kind, start, end in get_entities(tags)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns when there are no spans to score
        expected = {"precision": precision_score(gold, predicted),
                    "recall": recall_score(gold, predicted), "f1": f1_score(gold, predicted)}
    assert span_f1(gold, predicted) == pytest.approx(expected)
