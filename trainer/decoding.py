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


def constrained_viterbi(log_probs, mask, allowed: np.ndarray, start: np.ndarray) -> tf.Tensor:
    """The best-scoring tag sequence of each row among those that `allowed` and `start` permit.

    A sequence's score is the sum of its tags' log-probabilities over the row's real tokens.
    Works eagerly and in a `tf.function` with unknown batch size and length (zero included).

    Args:
        log_probs: float [B, L, T], each token's log-probability of each tag (any float dtype;
            the decoding runs in float32).
        mask: bool [B, L], true at real tokens; they are a prefix of each row.
        allowed: bool [T, T], true when tag j may follow tag i (see `bio_constraints`).
        start: bool [T], true when tag j may open a sequence.

    Returns:
        int32 [B, L]: the tag of each real token, 0 at padded positions.
    """
    transition = tf.constant(np.where(allowed, 0.0, FORBIDDEN), tf.float32)  # [T, T]
    opening = tf.constant(np.where(start, 0.0, FORBIDDEN), tf.float32)  # [T]
    num_tags = len(start)
    scores = tf.transpose(tf.cast(log_probs, tf.float32), [1, 0, 2])  # time-major [L, B, T]
    real = tf.transpose(tf.cast(mask, tf.bool))  # [L, B]
    length, batch_size = tf.shape(real)[0], tf.shape(real)[1]
    # One more padded step at the end, so that the scans never run over zero steps: a TensorList
    # of no elements cannot be stacked while the batch size is unknown.
    scores = tf.concat([scores, tf.zeros([1, batch_size, num_tags])], axis=0)
    real = tf.concat([real, tf.zeros([1, batch_size], tf.bool)], axis=0)
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
