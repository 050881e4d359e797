"""Validation scores that Keras metrics cannot compute in-graph: span F1 and overall accuracy."""
import keras
import tensorflow as tf

from mtmoe.feature_names import PAD_ID, TOKEN_IDS
from mtmoe.tasks import TaskScorer, decode_outputs, label_key, task_type


class ValidationScores(keras.callbacks.Callback):
    """After each epoch, scores the eval data as the Evaluator does and logs `val_<task>_<metric>`.

    Runs before other callbacks see the epoch's logs, so checkpoints and tuners can use them.
    """

    def __init__(self, dataset, tasks, class_names):
        super().__init__()
        self.dataset = dataset
        self.tasks = tasks
        self.class_names = {name: tf.constant(names) for name, names in class_names.items()}

    def scores(self):
        scorer = TaskScorer(self.tasks)
        for inputs, targets in self.dataset:
            probabilities = self.model(inputs, training=False)
            token_mask = tf.not_equal(inputs[TOKEN_IDS], PAD_ID)
            predictions = decode_outputs(self.tasks, probabilities, self.class_names, token_mask)
            labels = {label_key(t): task_type(t).eval_label(targets[t.name], self.class_names[t.name])
                      for t in self.tasks}
            scorer.add({k: v.numpy() for k, v in labels.items()},
                       {k: v.numpy() for k, v in predictions.items()})
        return scorer.result()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for task, scores in self.scores().items():
            for metric, value in scores.items():
                if metric != "examples":
                    logs[f"val_{task}_{metric}"] = value
