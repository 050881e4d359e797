"""Per-example counting of the task types, as the Evaluator and test scoring use it."""
import numpy as np
import pytest

from mtmoe.core.tasks import TASK_TYPES

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


def test_scorer_breaks_each_task_down_by_class():
    from mtmoe.core.config import TaskConfig
    from mtmoe.core.tasks import TaskScorer, label_key

    tasks = [TaskConfig("intent", "classification", "intent"),
             TaskConfig("signals", "multilabel", "signals"),
             TaskConfig("slots", "token_tagging", "slots")]
    scorer = TaskScorer(tasks, {"intent": ["balance", "transfer", "<unknown>"],
                                "signals": ["urgent", "polite", "<unknown>"],
                                "slots": []})
    scorer.add(
        {label_key(tasks[0]): np.array([0, 1, 1, -1]),
         label_key(tasks[1]): np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [-1, -1, -1]], float),
         label_key(tasks[2]): np.array([[b"B-amount", b"O"], [b"B-date", b""], [b"O", b"O"], [b"", b""]])},
        {"intent": np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.9, 0], [0.1, 0.9, 0]]),
         "signals": np.array([[0.9, 0.6, 0], [0.9, 0.1, 0], [0.1, 0.1, 0], [0.9, 0.9, 0.9]]),
         "slots_tags": np.array([[b"B-amount", b"O"], [b"O", b""], [b"B-date", b"O"], [b"B-x", b""]])})
    breakdown = scorer.breakdown()
    # The unlabelled fourth example counts nowhere.
    assert {k: breakdown["intent"][k] for k in ("kind", "counts")} == {"kind": "confusion", "counts": {
        "balance": {"balance": 1}, "transfer": {"balance": 1, "transfer": 1}}}
    assert {k: breakdown["signals"][k] for k in ("kind", "counts")} == {"kind": "per_class", "counts": {
        "urgent": {"tp": 2, "fp": 0, "fn": 0}, "polite": {"tp": 0, "fp": 1, "fn": 1}}}
    assert breakdown["slots"] == {"kind": "per_class", "counts": {
        "amount": {"tp": 1, "fp": 0, "fn": 0}, "date": {"tp": 0, "fp": 1, "fn": 1}}}
    # Calibration of the top class: right at 0.9 twice, wrong at 0.8 (reliability bins 12 and 13).
    assert scorer.result()["intent"] == {
        "accuracy": 2 / 3, "examples": 3, "ece": pytest.approx((0.2 + 0.8) / 3),
        "nll": pytest.approx(-(2 * np.log(0.9) + np.log(0.2)) / 3)}
    assert [(b["count"], b["accuracy"]) for b in breakdown["intent"]["reliability"]] == [(1, 0.0),
                                                                                        (2, 1.0)]
    # Each label's score against its gold: 9 scores of 3 labelled texts.
    assert sum(b["count"] for b in breakdown["signals"]["reliability"]) == 9
    assert "reliability" not in breakdown["slots"]


def test_task_types_are_read_back_from_the_serving_output_names(default_tasks):
    import tensorflow as tf

    from mtmoe.core.tasks import tasks_from_output_names
    from mtmoe.trainer.heads import decode_outputs

    probabilities, class_names = {}, {}
    for task in default_tasks:
        shape = [2, 3, 4] if task.type == "token_tagging" else [2, 4]
        probabilities[task.name] = tf.fill(shape, 0.25)
        class_names[task.name] = ["a", "b", "c", "d"]
    outputs = decode_outputs(default_tasks, probabilities, class_names, tf.ones([2, 3], tf.bool))
    outputs.pop("tokens", None)
    decoded = [name for name in outputs if name not in probabilities]
    found = tasks_from_output_names(decoded + ["tokens"])
    assert sorted((t.name, t.type) for t in found) == sorted((t.name, t.type) for t in default_tasks)


def test_tagging_decodes_the_best_well_formed_sequence_not_each_tokens_argmax():
    """Per-token argmax would give `O I-amount I-amount`; the decoder gives the best sequence
    without an I-x that opens a span, and each chosen tag's probability as its score."""
    import numpy as np
    import tensorflow as tf

    from mtmoe.core.config import TaskConfig
    from mtmoe.trainer.heads import decode_outputs

    task = TaskConfig("slots", "token_tagging", "slots")
    names = ["O", "B-amount", "I-amount", "<unknown>"]
    probs = np.array([[[0.70, 0.10, 0.15, 0.05], [0.30, 0.25, 0.45, 0.0],
                       [0.10, 0.05, 0.85, 0.0], [0.25, 0.25, 0.25, 0.25]]], "float32")
    outputs = decode_outputs([task], {"slots": tf.constant(probs)}, {"slots": names},
                             tf.constant([[True, True, True, False]]))
    assert [t.decode() for t in outputs["slots_tags"].numpy()[0]] == ["O", "B-amount", "I-amount", ""]
    np.testing.assert_allclose(outputs["slots_scores"].numpy()[0], [0.70, 0.25, 0.85, 0.0])


def test_every_task_type_the_config_accepts_is_implemented():
    from mtmoe.core.config import TASK_TYPE_NAMES
    from mtmoe.trainer.heads import HEADS

    assert sorted(TASK_TYPES) == sorted(HEADS) == sorted(TASK_TYPE_NAMES)


def test_a_task_that_answers_out_of_scope_is_scored_on_its_in_scope_answers():
    """Gold class 2 of 3 is the out-of-scope one. In scope: right and accepted, right but
    rejected (an error), wrong; out of scope: caught, missed."""
    from mtmoe.core.config import TaskConfig
    from mtmoe.core.tasks import TaskScorer, label_key

    task = TaskConfig("intent", "classification", "intent", out_of_scope_label="oos",
                      reject_below="auto")
    scorer = TaskScorer([task])
    probabilities = np.array([[0.9, 0.1, 0], [0.5, 0.2, 0.3], [0.2, 0.7, 0.1], [0.3, 0.1, 0.6],
                              [0.8, 0.1, 0.1]])
    scorer.add({label_key(task): np.array([0, 0, 0, 2, 2])},
               {"intent": probabilities, "intent_in_scope": np.array([True, False, True, False, True])})
    scores = scorer.result()["intent"]
    assert scores["accuracy"] == 3 / 5  # arg-max against gold, the out-of-scope class included
    assert scores["in_scope_accuracy"] == 1 / 3
    assert scores["out_of_scope_recall"] == 1 / 2
    assert scores["out_of_scope_precision"] == 1 / 2  # caught one, rejected one in-scope text
    # Without the served answer (a training epoch's scoring), no out-of-scope scores.
    plain = TaskScorer([task])
    plain.add({label_key(task): np.array([0, 2])}, {"intent": probabilities[:2]})
    assert "in_scope_accuracy" not in plain.result()["intent"]
    # No out-of-scope text and none rejected: recall and precision are undefined, not 0.
    none = TaskScorer([task])
    none.add({label_key(task): np.array([0])}, {"intent": probabilities[:1],
                                                "intent_in_scope": np.array([True])})
    assert np.isnan(none.result()["intent"]["out_of_scope_recall"])
    assert np.isnan(none.result()["intent"]["out_of_scope_precision"])
