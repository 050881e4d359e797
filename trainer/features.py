"""Transformed features -> model inputs and per-task targets, shared by training and the export."""
from typing import Dict, List

import tensorflow as tf

from components.transform import CHAR_VOCABULARY, TOKEN_VOCABULARY
from mtmoe.feature_names import CHAR_IDS, TOKEN_IDS
from mtmoe.tasks import class_names_from_vocabulary, label_key, label_vocabulary_name, task_type
from trainer.warm_start import CHARS, TOKENS, embedding_rows


def class_names(tft_output, task) -> List[str]:
    vocabulary = tft_output.vocabulary_by_name(label_vocabulary_name(task))
    return class_names_from_vocabulary([v.decode("utf-8") for v in vocabulary])


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
    return {task.name: task_type(task).targets(transformed[label_key(task)], num_classes[task.name])
            for task in tasks}
