"""Each task's loss is its mean over the examples labelled for it; unlabelled ones change nothing."""
import numpy as np
import pytest

from mtmoe.trainer.heads import MaskedBinaryCrossEntropy, MaskedSparseCrossEntropy


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def test_classification_loss_is_mean_over_labelled_examples():
    probs = _softmax(np.random.default_rng(0).normal(size=(4, 3)))
    labels = np.array([0, -1, 2, -1])
    loss = float(MaskedSparseCrossEntropy()(labels, probs))
    expected = -(np.log(probs[0, 0]) + np.log(probs[2, 2])) / 2
    assert loss == pytest.approx(expected, rel=1e-5)


def test_unlabelled_examples_do_not_change_the_loss():
    rng = np.random.default_rng(1)
    probs = _softmax(rng.normal(size=(4, 3)))
    labels = np.array([1, -1, 2, -1])
    changed = probs.copy()
    changed[1] = _softmax(rng.normal(size=3))
    changed[3] = _softmax(rng.normal(size=3))
    loss = MaskedSparseCrossEntropy()
    assert float(loss(labels, probs)) == pytest.approx(float(loss(labels, changed)), rel=1e-6)


def test_token_loss_averages_tokens_per_example_then_labelled_examples():
    probs = _softmax(np.random.default_rng(2).normal(size=(3, 4, 5)))
    labels = np.array([[1, 2, -1, -1], [-1, -1, -1, -1], [4, 0, 3, -1]])
    first = -(np.log(probs[0, 0, 1]) + np.log(probs[0, 1, 2])) / 2
    third = -(np.log(probs[2, 0, 4]) + np.log(probs[2, 1, 0]) + np.log(probs[2, 2, 3])) / 3
    assert float(MaskedSparseCrossEntropy()(labels, probs)) == pytest.approx((first + third) / 2,
                                                                             rel=1e-5)


def test_multilabel_loss_ignores_unlabelled_rows():
    scores = np.array([[0.9, 0.2], [0.5, 0.5], [0.3, 0.6]], dtype="float32")
    labels = np.array([[1, 0], [-1, -1], [0, 1]], dtype="float32")
    per_row = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores), axis=-1)
    expected = (per_row[0] + per_row[2]) / 2
    assert float(MaskedBinaryCrossEntropy()(labels, scores)) == pytest.approx(expected, rel=1e-4)


def test_all_unlabelled_batch_gives_zero_loss_not_nan():
    probs = _softmax(np.zeros((2, 3)))
    assert float(MaskedSparseCrossEntropy()(np.array([-1, -1]), probs)) == 0.0
    assert float(MaskedBinaryCrossEntropy()(-np.ones((2, 3), "float32"), probs)) == 0.0


def test_label_smoothing_survives_keras_serialization_and_changes_the_loss():
    probs = _softmax(np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]))
    cases = [(MaskedSparseCrossEntropy, np.array([0, 2])),
             (MaskedBinaryCrossEntropy, np.array([[1, 0, 0], [0, 0, 1]], "float32"))]
    for kind, targets in cases:
        smoothed = kind(label_smoothing=0.2)
        clone = kind.from_config(smoothed.get_config())
        assert clone.label_smoothing == 0.2
        assert float(clone(targets, probs)) == pytest.approx(float(smoothed(targets, probs)))
        assert float(clone(targets, probs)) != pytest.approx(float(kind()(targets, probs)))


def test_token_mean_weighs_every_labelled_token_alike():
    probs = _softmax(np.random.default_rng(0).normal(size=(2, 4, 3)))
    targets = np.array([[0, 1, -1, -1], [2, 2, 1, 0]])  # two labelled tokens, then four
    per_token = -np.log(np.take_along_axis(probs, np.maximum(targets, 0)[..., None], -1)[..., 0])
    labelled = targets >= 0
    assert float(MaskedSparseCrossEntropy(token_mean=True)(targets, probs)) == pytest.approx(
        per_token[labelled].mean(), rel=1e-5)
    assert float(MaskedSparseCrossEntropy()(targets, probs)) == pytest.approx(
        np.mean([per_token[0, :2].mean(), per_token[1].mean()]), rel=1e-5)
