import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from mtmoe.core.metrics import (accepted, add_nested_counts, best_threshold, bio_spans, calibration_counts,
                                calibration_logits, calibration_scores, choose_rejection_threshold,
                                f1_from_counts,
                                fit_temperature, length_bucket_names, multilabel_counts,
                                reliability, span_counts, span_counts_by_type, span_f1)


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


def _sampled(rng, probabilities):
    return np.array([rng.choice(len(p), p=p) for p in probabilities])


def test_temperature_scaling_finds_the_temperature_the_labels_were_drawn_with():
    """Labels drawn from softmax(z / 2.5) while the model says softmax(z): the fitted temperature
    is about 2.5; the same for one sigmoid per label drawn at sigmoid(z / 0.5)."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 5))
    drawn = np.exp(z / 2.5) / np.exp(z / 2.5).sum(axis=1, keepdims=True)
    model = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = _sampled(rng, drawn)
    assert fit_temperature(calibration_logits(model, False), labels) == pytest.approx(2.5, rel=0.06)
    gold = (rng.random(z.shape) < 1 / (1 + np.exp(-z / 0.5))).astype(float)
    scores = 1 / (1 + np.exp(-z))
    assert fit_temperature(calibration_logits(scores, True), gold, binary=True) == pytest.approx(
        0.5, rel=0.06)


def test_expected_calibration_error_is_the_count_weighted_gap_of_each_confidence_bin():
    """Two texts at 0.9 (one right) and one at 0.3 (right): bins [0.867, 0.933) and [0.267,
    0.333); ECE = (|1 - 1.8| + |1 - 0.3|) / 3 = 0.5; NLL the mean of the given ones."""
    counts = calibration_counts([0.9, 0.9, 0.3], [1, 0, 1], [0.1, 2.3, 1.2])
    assert calibration_scores(counts) == {"ece": pytest.approx(0.5), "nll": pytest.approx(3.6 / 3)}
    assert reliability(counts) == [
        {"low": pytest.approx(4 / 15), "high": pytest.approx(5 / 15), "confidence": pytest.approx(0.3),
         "accuracy": 1.0, "count": 1},
        {"low": pytest.approx(13 / 15), "high": pytest.approx(14 / 15),
         "confidence": pytest.approx(0.9), "accuracy": 0.5, "count": 2}]
    assert calibration_counts(1.0, 1, 0.0)["bin14_n"] == 1  # a confidence of 1 is in the last bin


def test_with_out_of_scope_eval_texts_the_threshold_balances_in_scope_accuracy_and_their_recall():
    """In-scope texts at 0.6-0.95 top probability, out-of-scope ones (gold: the last class) at
    0.3-0.55: the chosen threshold separates them (both rates 1.0), the lowest that does."""
    rng = np.random.default_rng(0)
    def rows(tops, label):
        p = np.zeros((len(tops), 4))
        p[np.arange(len(tops)), label] = tops
        p[:, 3] += 1 - tops  # the rest on the out-of-scope class
        return p
    in_scope, outside = rng.uniform(0.6, 0.95, 50), rng.uniform(0.3, 0.55, 10)
    probabilities = np.concatenate([rows(in_scope, 1), rows(outside, 0)])
    labels = np.array([1] * 50 + [3] * 10)
    chosen = choose_rejection_threshold(probabilities, labels, rejected_in_scope=0.02)
    assert outside.max() < chosen["reject_below"] <= in_scope.min()
    assert chosen["reject_below"] - 0.005 < outside.max()  # the lowest of the best
    assert (chosen["eval_in_scope_accuracy"], chosen["eval_out_of_scope_recall"]) == (1.0, 1.0)
    assert accepted(probabilities, chosen["reject_below"]).tolist() == [True] * 50 + [False] * 10


def test_without_out_of_scope_eval_texts_the_threshold_rejects_the_asked_share_of_in_scope_ones():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), 1000)
    p[:, -1] = 0  # the reserved class: never trained, never the arg-max
    p /= p.sum(axis=1, keepdims=True)
    labels = p[:, :-1].argmax(axis=1)
    chosen = choose_rejection_threshold(p, labels, rejected_in_scope=0.05)
    assert np.mean(~accepted(p, chosen["reject_below"])) == pytest.approx(0.05, abs=0.002)
    assert chosen["eval_out_of_scope_texts"] == 0
