"""Transformed features -> model inputs and per-task targets, shared by training and the export."""
from typing import Dict, List

import tensorflow as tf

from mtmoe.core.feature_names import (CHAR_IDS, CHAR_VOCABULARY, FREQUENT_TOKEN_VOCABULARY, PAD_ID,
                                      TOKEN_IDS, TOKEN_VOCABULARY)
from mtmoe.core.tasks import class_names_from_vocabulary, label_key, label_vocabulary_name, task_type
from mtmoe.trainer.heads import head_of
from mtmoe.trainer.warm_start import CHARS, TOKENS, embedding_rows


def class_names(tft_output, task) -> List[str]:
    vocabulary = tft_output.vocabulary_by_name(label_vocabulary_name(task))
    return class_names_from_vocabulary([v.decode("utf-8") for v in vocabulary], task)


def vocabularies(tft_output, config) -> Dict[str, List[str]]:
    """The entries of every vocabulary that indexes model weights, by the names warm start uses:
    embedding rows of tokens and characters, and each task's output classes."""
    def rows(name):
        return embedding_rows([v.decode("utf-8") for v in tft_output.vocabulary_by_name(name)])

    keys = {TOKENS: rows(TOKEN_VOCABULARY)}
    if config.text.max_chars:
        keys[CHARS] = rows(CHAR_VOCABULARY)
    keys.update({task.name: class_names(tft_output, task) for task in config.tasks})
    return keys


def vocabulary_sizes(tft_output, config) -> Dict[str, int]:
    """Embedding rows per id input: padding, the vocabulary, and the out-of-vocabulary id."""
    sizes = {TOKEN_IDS: tft_output.vocabulary_size_by_name(TOKEN_VOCABULARY) + 2}
    if config.text.max_chars:
        sizes[CHAR_IDS] = tft_output.vocabulary_size_by_name(CHAR_VOCABULARY) + 2
    return sizes


def model_inputs(transformed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {name: transformed[name] for name in (TOKEN_IDS, CHAR_IDS) if name in transformed}


def model_targets(transformed: Dict[str, tf.Tensor], tasks, num_classes: Dict[str, int]
                  ) -> Dict[str, tf.Tensor]:
    return {task.name: head_of(task).targets(transformed[label_key(task)], num_classes[task.name])
            for task in tasks}


def text_lengths(inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    """[B] tokens of each text (the ids that are not padding)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(inputs[TOKEN_IDS], PAD_ID), tf.int32), axis=1)


def cut_to_longest(inputs: Dict[str, tf.Tensor]):
    """(model inputs padded to `max_tokens` cut to the batch's longest text, at least one token;
    that length): a step or a request then costs what its texts need (SNIPS: 9 tokens on average,
    padded to 40). Padding stays masked, so no text's outputs change."""
    longest = tf.maximum(tf.reduce_max(text_lengths(inputs)), 1)
    return {name: value[:, :longest] for name, value in inputs.items()}, longest


def trim_to_longest(inputs: Dict[str, tf.Tensor], targets: Dict[str, tf.Tensor], tasks):
    """A training batch cut to its longest text (cut_to_longest), its token-level targets too."""
    inputs, longest = cut_to_longest(inputs)
    targets = {task.name: targets[task.name][:, :longest] if task_type(task).per_token
               else targets[task.name] for task in tasks}
    return inputs, targets


def rare_token_ids(tft_output) -> tuple:
    """(first, last) token id of the tokens seen once in training: after the frequent ones, before
    the out-of-vocabulary id."""
    return (tft_output.vocabulary_size_by_name(FREQUENT_TOKEN_VOCABULARY) + 1,
            tft_output.vocabulary_size_by_name(TOKEN_VOCABULARY))


def drop_rare_words(inputs: Dict[str, tf.Tensor], rare_ids: tuple, rate: float, seed):
    """Each rare token becomes the out-of-vocabulary id with probability `rate` (word dropout);
    its characters stay, so the character encoder learns to stand in. The draw is a function of
    `seed` (two integers) alone: a stateful random op in a parallel `Dataset.map` is drawn in
    whatever order the threads run, so one seed gave other batches from run to run."""
    ids = inputs[TOKEN_IDS]
    first, last = rare_ids
    rare = tf.logical_and(ids >= first, ids <= last)
    dropped = tf.logical_and(rare, tf.random.stateless_uniform(tf.shape(ids), seed=seed) < rate)
    return {**inputs, TOKEN_IDS: tf.where(dropped, tf.cast(last + 1, ids.dtype), ids)}
