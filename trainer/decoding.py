"""BIO-constrained Viterbi decoding of token tags, in the TensorFlow graph.

Taking each token's most probable tag independently can emit ill-formed sequences: an `I-x` that
opens the sequence or follows `O`, `<unknown>` or a tag of another type. Such an `I-x` belongs to
no `B-x` and cannot be consumed as part of a span. The decoder here picks, over the softmax's
log-probabilities, the best-scoring sequence among the well-formed ones, so it never emits them.

Core TensorFlow ops only (no tensorflow-addons or tensorflow-text), so that a SavedModel that
decodes this way loads in the stock TF Serving image.
"""
from typing import List, Tuple

import numpy as np
import tensorflow as tf

# The score of a forbidden transition: finite, unlike -inf, so that no arithmetic on it gives NaN.
FORBIDDEN = -1e9


def _prefix_and_type(tag: str) -> Tuple[str, str]:
    """("B", "x") for "B-x", ("I", "x") for "I-x" (split on the first "-"), ("", "") otherwise."""
    prefix, dash, entity_type = tag.partition("-")
    if dash and prefix in ("B", "I"):
        return prefix, entity_type
    return "", ""


def _may_follow(previous: str, tag: str) -> bool:
    prefix, entity_type = _prefix_and_type(tag)
    previous_prefix, previous_type = _prefix_and_type(previous)
    return prefix != "I" or (previous_prefix != "" and previous_type == entity_type)


def bio_constraints(tags: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Which tags may follow which, and which may open a sequence, under the BIO scheme.

    `I-x` may only follow `B-x` or `I-x` and never opens a sequence; every other tag (`O`, `B-*`,
    `<unknown>`, anything not of the form B-/I-) may appear anywhere.

    Args:
        tags: the tag vocabulary, in the order of the model's outputs.

    Returns:
        `allowed`, bool [T, T], true when tag j may follow tag i; `start`, bool [T], true when
        tag j may open a sequence.

    Example:
        >>> allowed, start = bio_constraints(["O", "B-a", "I-a"])
        >>> allowed[0, 2], allowed[1, 2], start[2]  # (False, True, False)
    """
    allowed = np.array([[_may_follow(previous, tag) for tag in tags] for previous in tags],
                       dtype=bool).reshape(len(tags), len(tags))
    start = np.array([_prefix_and_type(tag)[0] != "I" for tag in tags], dtype=bool)
    return allowed, start


def _time_major_steps(scores, mask):
    """(scores [L + 1, B, T] float32, real [L + 1, B], batch size): the scans' inputs, one step per
    token, plus one padded step at the end so that a scan never runs over zero steps (a TensorList
    of no elements cannot be stacked while the batch size is unknown)."""
    scores = tf.transpose(tf.cast(scores, tf.float32), [1, 0, 2])
    real = tf.transpose(tf.cast(mask, tf.bool))
    batch_size = tf.shape(real)[1]
    scores = tf.concat([scores, tf.zeros([1, batch_size, tf.shape(scores)[2]])], axis=0)
    real = tf.concat([real, tf.zeros([1, batch_size], tf.bool)], axis=0)
    return scores, real, batch_size


def constrained_viterbi(log_probs, mask, allowed: np.ndarray, start: np.ndarray,
                        transitions=None, start_scores=None) -> tf.Tensor:
    """The best-scoring tag sequence of each row among those that `allowed` and `start` permit.

    A sequence's score is the sum of its tags' log-probabilities over the row's real tokens, plus,
    with a linear-chain CRF's learned scores, `start_scores[first tag]` and `transitions[i, j]` for
    each tag j after a tag i. Works eagerly and in a `tf.function` with unknown batch size and
    length (zero included).

    Without learned scores, a row whose per-token best tags are well-formed has them as its best
    well-formed sequence, so the token-by-token search (a loop over the tokens, most of a short
    text's decoding time) runs only when some row of the batch needs it; either way each row gets
    the same tags.

    Args:
        log_probs: float [B, L, T], each token's log-probability of each tag (any float dtype;
            the decoding runs in float32).
        mask: bool [B, L], true at real tokens; they are a prefix of each row.
        allowed: bool [T, T], true when tag j may follow tag i (see `bio_constraints`).
        start: bool [T], true when tag j may open a sequence.
        transitions, start_scores: float [T, T] and [T], a CRF's learned scores (none: 0).

    Returns:
        int32 [B, L]: the tag of each real token, 0 at padded positions.
    """
    if transitions is not None:
        return _viterbi(log_probs, mask, allowed, start, transitions, start_scores)
    mask = tf.cast(mask, tf.bool)
    best = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    return tf.cond(_all_well_formed(best, mask, allowed, start),
                   lambda: tf.where(mask, best, 0),
                   lambda: _viterbi(log_probs, mask, allowed, start))


def _all_well_formed(tags, mask, allowed: np.ndarray, start: np.ndarray) -> tf.Tensor:
    """Scalar bool: every row's real tags [B, L] open and follow each other as permitted."""
    opens = tf.gather(tf.constant(start), tags[:, :1])
    follows = tf.gather_nd(tf.constant(allowed), tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1))
    return tf.reduce_all(tf.logical_or(tf.concat([opens, follows], axis=1),
                                       tf.logical_not(mask)))


def _viterbi(log_probs, mask, allowed: np.ndarray, start: np.ndarray, transitions=None,
             start_scores=None) -> tf.Tensor:
    """`constrained_viterbi` by a search over the tokens, for any scores."""
    transition = tf.constant(np.where(allowed, 0.0, FORBIDDEN), tf.float32)  # [T, T]
    opening = tf.constant(np.where(start, 0.0, FORBIDDEN), tf.float32)  # [T]
    if transitions is not None:
        transition += tf.cast(transitions, tf.float32)
        opening += tf.cast(start_scores, tf.float32)
    num_tags = len(start)
    length = tf.shape(mask)[1]
    scores, real, batch_size = _time_major_steps(log_probs, mask)
    stay = tf.broadcast_to(tf.range(num_tags), [batch_size, num_tags])  # back-pointers to itself

    def forward(carry, step):
        """Best score of a path ending in each tag at this token, and the tag before it."""
        best, _ = carry  # [B, T]: best score of a path ending in each tag at the last real token
        position, token_scores, is_real = step
        candidates = best[:, :, None] + transition  # [B, previous tag, tag]
        # Real tokens are a prefix, so position 0 is where every non-empty row opens.
        reached = tf.where(position == 0, opening, tf.reduce_max(candidates, axis=1))
        came_from = tf.argmax(candidates, axis=1, output_type=tf.int32)
        # Padded steps carry the scores unchanged and point each tag back to itself.
        return (tf.where(is_real[:, None], reached + token_scores, best),
                tf.where(is_real[:, None], came_from, stay))

    initial = (tf.zeros([batch_size, num_tags]), stay)
    best, pointers = tf.scan(forward, (tf.range(length + 1), scores, real), initializer=initial)
    last_tag = tf.argmax(best[-1], axis=1, output_type=tf.int32)

    # pointers[t] leads from the tag at t to the tag at t - 1, so the tag at t is read from the
    # pointers of t + 1 (past the end, pointers of each tag to itself).
    following = tf.concat([pointers[1:], stay[None]], axis=0)
    tags = tf.scan(lambda tag, pointer: tf.gather(pointer, tag, batch_dims=1), following,
                   initializer=last_tag, reverse=True)  # [L + 1, B]
    return tf.where(tf.cast(mask, tf.bool), tf.transpose(tags[:length]), 0)


def crf_log_likelihood(log_probs, tags, mask, transitions, start_scores) -> tf.Tensor:
    """log p(tags | x) of each row under a linear-chain CRF whose per-token scores are `log_probs`:
    `score(y) = start_scores[y_0] + sum_t log_probs[t, y_t] + sum_t transitions[y_(t-1), y_t]`
    over the real tokens, normalised over every tag sequence (forward algorithm). With zero
    transitions and start scores it is the sum of the tokens' log-probabilities.

    Args:
        log_probs: float [B, L, T]; tags: int [B, L] (any value at padding);
        mask: bool [B, L], true at real tokens, a prefix of each row;
        transitions: float [T, T]; start_scores: float [T].

    Returns:
        float32 [B]; 0 for a row without real tokens.
    """
    log_probs = tf.cast(log_probs, tf.float32)
    transitions, start_scores = tf.cast(transitions, tf.float32), tf.cast(start_scores, tf.float32)
    real = tf.cast(mask, tf.bool)
    tags = tf.where(real, tf.cast(tags, tf.int32), 0)
    weights = tf.cast(real, tf.float32)
    emitted = tf.reduce_sum(tf.gather(log_probs, tags, batch_dims=2) * weights, axis=1)
    pairs = tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1)  # [B, L - 1, 2]
    moved = tf.reduce_sum(tf.gather_nd(transitions, pairs) * weights[:, 1:], axis=1)
    opened = tf.reduce_sum(tf.gather(start_scores, tags[:, :1]) * weights[:, :1], axis=1)  # [B]
    gold = emitted + moved + opened

    steps, step_real, batch_size = _time_major_steps(log_probs, real)
    num_tags = tf.shape(log_probs)[2]

    # logsumexp_i(alpha_i + transitions_ij) as one matrix product in exp space, each factor shifted
    # by its maximum: the scan's step is then a matmul, not a [B, T, T] reduction.
    transitions_max = tf.reduce_max(transitions)
    exp_transitions = tf.exp(transitions - transitions_max)

    def forward(alpha, step):
        """log of the summed scores of every path ending in each tag at this token."""
        position, token_scores, is_real = step
        top = tf.reduce_max(alpha, axis=1, keepdims=True)
        summed = tf.matmul(tf.exp(alpha - top), exp_transitions)
        reached = tf.where(position == 0, start_scores[None, :],
                           tf.math.log(summed + 1e-30) + top + transitions_max)
        return tf.where(is_real[:, None], reached + token_scores, alpha)

    alphas = tf.scan(forward, (tf.range(tf.shape(steps)[0]), steps, step_real),
                     initializer=tf.zeros([batch_size, num_tags]))
    log_partition = tf.reduce_logsumexp(alphas[-1], axis=1)
    return tf.where(tf.reduce_any(real, axis=1), gold - log_partition, 0.0)
