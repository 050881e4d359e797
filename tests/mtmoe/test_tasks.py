"""Per-example counting of the task types, as the Evaluator and test scoring use it."""
import numpy as np

from mtmoe.tasks import TASK_TYPES

TAGS = TASK_TYPES["token_tagging"]


def test_token_tagging_counts_spans_at_labelled_positions_only():
    gold = np.array([b"B-date", b"I-date", b"O", b"", b""])
    predicted = np.array([b"B-date", b"I-date", b"O", b"B-x", b""])  # the pad prediction is ignored
    assert TAGS.count(gold, predicted) == {"tp": 1, "fp": 0, "fn": 0}
    assert TAGS.exact(gold, predicted) is True
    assert TAGS.exact(gold, np.array([b"B-date", b"O", b"O", b"", b""])) is False


def test_unlabelled_example_counts_for_nothing():
    empty = np.array([b"", b""])
    assert TAGS.count(empty, np.array([b"O", b"B-x"])) is None
    assert TAGS.exact(empty, np.array([b"O", b"B-x"])) is None
    assert TASK_TYPES["classification"].count(np.array([-1]), np.array([0.2, 0.8])) is None
