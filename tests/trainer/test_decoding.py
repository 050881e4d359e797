"""BIO-constrained Viterbi decoding: never ill-formed, the best well-formed sequence (checked
against a brute-force search), blind to padding, the argmax when that is well-formed (alone or
beside rows that need the search), and exportable to a SavedModel that the stock TF Serving image
loads."""
import itertools

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from mtmoe.serving.compat import unsupported_ops
from mtmoe.trainer.decoding import bio_constraints, constrained_viterbi, crf_log_likelihood

TAGS = ["O", "B-object_location_type", "I-object_location_type", "B-timeRange", "I-timeRange",
        "<unknown>"]
SMALL_TAGS = ["O", "B-a", "I-a", "B-b", "I-b"]


def logit_arrays(shape, bound=8.0):
    """Float32 arrays of that shape, every element drawn apart (no runs of one fill value)."""
    return arrays(np.float32, shape, elements=st.floats(-bound, bound, width=32), fill=st.nothing())


def _well_formed(tags):
    """True when every I-x directly follows a B-x or an I-x (written apart from the module)."""
    previous = None
    for tag in tags:
        if tag.startswith("I-") and previous not in ("B-" + tag[2:], tag):
            return False
        previous = tag
    return True


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def decode():
    """The decoder over TAGS in a tf.function traced once, for any batch size and length."""
    allowed, start = bio_constraints(TAGS)
    return tf.function(lambda log_probs, mask: constrained_viterbi(log_probs, mask, allowed, start),
                       input_signature=[tf.TensorSpec([None, None, len(TAGS)], tf.float32),
                                        tf.TensorSpec([None, None], tf.bool)])


@st.composite
def padded_batches(draw, num_tags, max_length):
    """(log-probs [B, L, T], lengths [B]): random logits, each row real up to its length."""
    lengths = draw(st.lists(st.integers(0, max_length), min_size=1, max_size=4))
    logits = draw(logit_arrays((len(lengths), max(lengths), num_tags)))
    return _log_softmax(logits), np.array(lengths)


def _mask(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def test_bio_constraints_matrices():
    allowed, start = bio_constraints(["O", "B-a", "I-a", "B-x-y", "I-x-y", "<unknown>"])
    np.testing.assert_array_equal(allowed, np.array([
        # O  B-a I-a B-x-y I-x-y <unknown>     (the following tag)
        [1, 1, 0, 1, 0, 1],  # after O
        [1, 1, 1, 1, 0, 1],  # after B-a
        [1, 1, 1, 1, 0, 1],  # after I-a
        [1, 1, 0, 1, 1, 1],  # after B-x-y
        [1, 1, 0, 1, 1, 1],  # after I-x-y
        [1, 1, 0, 1, 0, 1],  # after <unknown>
    ], dtype=bool))
    np.testing.assert_array_equal(start, np.array([1, 1, 0, 1, 0, 1], dtype=bool))
    assert allowed.dtype == start.dtype == bool


@settings(max_examples=40, deadline=None)
@given(padded_batches(len(TAGS), max_length=12), st.floats(0, 6))
def test_decoded_sequences_are_never_ill_formed(decode, batch, inside_bias):
    log_probs, lengths = batch
    inside = np.array([tag.startswith("I-") for tag in TAGS])
    tilted = _log_softmax(log_probs + inside_bias * inside)  # makes a stray I-x more likely
    decoded = decode(tilted, _mask(lengths, tilted.shape[1])).numpy()
    for row, length in zip(decoded, lengths):
        assert _well_formed([TAGS[i] for i in row[:length]]), [TAGS[i] for i in row[:length]]


@settings(max_examples=30, deadline=None)
@given(padded_batches(len(SMALL_TAGS), max_length=5))
def test_equals_brute_force_search_over_well_formed_sequences(batch):
    log_probs, lengths = batch
    allowed, start = bio_constraints(SMALL_TAGS)
    decoded = constrained_viterbi(log_probs, _mask(lengths, log_probs.shape[1]), allowed,
                                  start).numpy()  # eagerly
    for row_log_probs, row, length in zip(log_probs, decoded, lengths):
        def score(sequence):
            return float(sum(row_log_probs[position, tag] for position, tag in enumerate(sequence)))

        sequences = itertools.product(range(len(SMALL_TAGS)), repeat=length)
        candidates = sorted(((score(sequence), sequence) for sequence in sequences
                             if _well_formed([SMALL_TAGS[i] for i in sequence])), reverse=True)
        found = tuple(row[:length])
        assert score(found) == pytest.approx(candidates[0][0], abs=1e-4)
        if len(candidates) > 1 and candidates[0][0] - candidates[1][0] > 1e-3:
            assert found == candidates[0][1]
        assert not row[length:].any()


@settings(max_examples=30, deadline=None)
@given(st.data(), st.integers(1, 10), st.integers(1, 6))
def test_padding_does_not_change_a_row(decode, data, length, extra):
    row = data.draw(logit_arrays((1, length, len(TAGS))))
    garbage = data.draw(logit_arrays((1, extra, len(TAGS)), bound=50.0))
    alone = decode(_log_softmax(row), np.ones((1, length), bool)).numpy()
    padded = decode(np.concatenate([_log_softmax(row), garbage], axis=1),
                    _mask([length], length + extra)).numpy()
    np.testing.assert_array_equal(padded[:, :length], alone)
    np.testing.assert_array_equal(padded[:, length:], 0)


@st.composite
def well_formed_tags(draw, length):
    """Indices into TAGS of a well-formed sequence: stray I-x tags are turned into B-x."""
    tags = []
    for _ in range(length):
        tag = draw(st.sampled_from(TAGS))
        tags.append(tag if _well_formed(tags + [tag]) else "B-" + tag[2:])
    return [TAGS.index(tag) for tag in tags]


@settings(max_examples=30, deadline=None)
@given(st.data(), st.integers(1, 12))
def test_well_formed_argmax_is_kept(decode, data, length):
    logits = data.draw(logit_arrays((length, len(TAGS))))
    expected = data.draw(well_formed_tags(length))
    logits[np.arange(length), expected] = logits.max(-1) + 1  # the argmax is the well-formed one
    decoded = decode(_log_softmax(logits)[None], np.ones((1, length), bool)).numpy()[0]
    np.testing.assert_array_equal(decoded, expected)


@settings(max_examples=20, deadline=None)
@given(st.data(), st.integers(1, 12))
def test_a_row_decodes_alike_whether_or_not_its_batch_needs_the_search(decode, data, length):
    """A row whose argmax is well-formed takes the shortcut alone; beside a row whose argmax opens
    with an I-x, the whole batch is searched token by token. Its tags are the same either way."""
    logits = data.draw(logit_arrays((2, length, len(TAGS))))
    logits[0, np.arange(length), data.draw(well_formed_tags(length))] = logits[0].max(-1) + 1
    logits[1, 0, TAGS.index("I-timeRange")] = logits[1, 0].max() + 1
    log_probs, mask = _log_softmax(logits), np.ones((2, length), bool)
    alone = decode(log_probs[:1], mask[:1]).numpy()[0]
    together = decode(log_probs, mask).numpy()
    np.testing.assert_array_equal(together[0], alone)
    assert _well_formed([TAGS[i] for i in together[1]])
    assert TAGS[together[1][0]] != "I-timeRange"


@pytest.mark.parametrize("shape", [(2, 0), (0, 3), (0, 0)])
def test_empty_batches_and_sequences(decode, shape):
    allowed, start = bio_constraints(TAGS)
    log_probs = np.zeros(shape + (len(TAGS),), np.float32)
    for decoded in (decode(log_probs, np.zeros(shape, bool)),
                    constrained_viterbi(log_probs, np.zeros(shape, bool), allowed, start)):
        assert decoded.dtype == tf.int32 and tuple(decoded.shape) == shape


def test_saved_model_round_trip_loads_in_stock_serving(tmp_path):
    allowed, start = bio_constraints(TAGS)

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, len(TAGS)], tf.float16),
                                      tf.TensorSpec([None, None], tf.bool)])
        def decode(self, log_probs, mask):
            return {"tags": constrained_viterbi(log_probs, mask, allowed, start)}

    rng = np.random.default_rng(0)
    log_probs = _log_softmax(rng.normal(size=(3, 7, len(TAGS))) * 3).astype(np.float16)
    mask = _mask([7, 4, 0], 7)
    decoder = Decoder()
    expected = decoder.decode(log_probs, mask)["tags"].numpy()
    tf.saved_model.save(decoder, str(tmp_path), signatures={"serving_default": decoder.decode})
    loaded = tf.saved_model.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.signatures["serving_default"](
        log_probs=tf.constant(log_probs), mask=tf.constant(mask))["tags"].numpy(), expected)
    np.testing.assert_array_equal(loaded.decode(log_probs, mask)["tags"].numpy(), expected)
    assert unsupported_ops(str(tmp_path)) == []


def _crf_score(row_log_probs, sequence, transitions, start_scores):
    """A tag sequence's CRF score, written apart from the module."""
    if not sequence:
        return 0.0
    total = float(start_scores[sequence[0]])
    for position, tag in enumerate(sequence):
        total += float(row_log_probs[position, tag])
        if position:
            total += float(transitions[sequence[position - 1], tag])
    return total


@settings(max_examples=30, deadline=None)
@given(padded_batches(len(SMALL_TAGS), max_length=4), st.data())
def test_crf_viterbi_equals_brute_force_search_with_the_learned_scores(batch, data):
    log_probs, lengths = batch
    transitions = data.draw(logit_arrays((len(SMALL_TAGS), len(SMALL_TAGS)), bound=3.0))
    start_scores = data.draw(logit_arrays((len(SMALL_TAGS),), bound=3.0))
    allowed, start = bio_constraints(SMALL_TAGS)
    decoded = constrained_viterbi(log_probs, _mask(lengths, log_probs.shape[1]), allowed, start,
                                  transitions, start_scores).numpy()
    for row_log_probs, row, length in zip(log_probs, decoded, lengths):
        candidates = sorted(
            ((_crf_score(row_log_probs, sequence, transitions, start_scores), sequence)
             for sequence in itertools.product(range(len(SMALL_TAGS)), repeat=length)
             if _well_formed([SMALL_TAGS[i] for i in sequence])), reverse=True)
        found = tuple(row[:length])
        assert _well_formed([SMALL_TAGS[i] for i in found])
        assert _crf_score(row_log_probs, found, transitions, start_scores) == pytest.approx(
            candidates[0][0], abs=1e-3)


@settings(max_examples=30, deadline=None)
@given(padded_batches(3, max_length=4), st.data())
def test_crf_log_likelihood_normalises_over_every_tag_sequence(batch, data):
    """log p(y) = score(y) - log sum over all 3^length sequences of exp(score), by enumeration."""
    log_probs, lengths = batch
    transitions = data.draw(logit_arrays((3, 3), bound=3.0))
    start_scores = data.draw(logit_arrays((3,), bound=3.0))
    tags = data.draw(arrays(np.int32, log_probs.shape[:2], elements=st.integers(0, 2)))
    likelihood = crf_log_likelihood(log_probs, tags, _mask(lengths, log_probs.shape[1]),
                                    transitions, start_scores).numpy()
    for row_log_probs, row_tags, length, found in zip(log_probs, tags, lengths, likelihood):
        if length == 0:
            assert found == 0.0
            continue
        scores = [_crf_score(row_log_probs, sequence, transitions, start_scores)
                  for sequence in itertools.product(range(3), repeat=length)]
        gold = _crf_score(row_log_probs, tuple(row_tags[:length]), transitions, start_scores)
        assert found == pytest.approx(gold - np.logaddexp.reduce(scores), abs=1e-3)


def test_a_crf_without_learned_scores_is_the_sum_of_the_tokens_log_probabilities():
    log_probs = _log_softmax(np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32))
    tags = np.array([[0, 2, 1, 0], [1, 1, 0, 0]])
    mask = _mask([4, 2], 4)
    found = crf_log_likelihood(log_probs, tags, mask, np.zeros((3, 3)), np.zeros(3)).numpy()
    expected = [np.take_along_axis(log_probs[i], tags[i][:, None], 1)[:n].sum() for i, n in
                enumerate([4, 2])]
    np.testing.assert_allclose(found, expected, atol=1e-5)
