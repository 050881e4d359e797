"""Transformed features -> model inputs and per-task targets, shared by training and the export."""
from typing import Dict, List

import tensorflow as tf

from components.transform import TOKEN_VOCABULARY
from mtmoe.feature_names import TOKEN_IDS
from mtmoe.tasks import class_names_from_vocabulary, label_key, label_vocabulary_name, task_type


def class_names(tft_output, task) -> List[str]:
    vocabulary = tft_output.vocabulary_by_name(label_vocabulary_name(task))
    return class_names_from_vocabulary([v.decode("utf-8") for v in vocabulary])


def token_vocabulary_size(tft_output) -> int:
    """Embedding rows: padding, the vocabulary, and the out-of-vocabulary id."""
    return tft_output.vocabulary_size_by_name(TOKEN_VOCABULARY) + 2


def model_inputs(transformed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {TOKEN_IDS: transformed[TOKEN_IDS]}


def model_targets(transformed: Dict[str, tf.Tensor], tasks, num_classes: Dict[str, int]
                  ) -> Dict[str, tf.Tensor]:
    return {task.name: task_type(task).targets(transformed[label_key(task)], num_classes[task.name])
            for task in tasks}
