"""The Trainer's and Tuner's callbacks: validation scores that Keras metrics cannot compute in-graph
(span F1, overall accuracy, the tuning objective), learned loss weights, the learning-rate decay,
epoch times, console progress, and the experts' load for TensorBoard. The learning-rate decay and
the weights' moving average are Keras' own (`cosine_decay`, `SwapEMAWeights`)."""
import copy
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from mtmoe.core.config import MULTILABEL
from mtmoe.core.console import progress, say
from mtmoe.core.feature_names import PAD_ID, TOKEN_IDS
from mtmoe.core.metrics import best_threshold, logit
from mtmoe.core.tasks import OBJECTIVE, TaskScorer, label_key, objective, task_type
from mtmoe.trainer.distribution import in_multi_worker_mode, is_chief
from mtmoe.trainer.heads import crf_scores, decode_outputs, head_of
from mtmoe.trainer.introspection import GateProbe


class ValidationScores(keras.callbacks.Callback):
    """After each epoch, scores the eval data as the Evaluator does and logs `val_<task>_<metric>`
    and `val_objective` (see mtmoe.core.tasks.objective). A multi-label task is scored at the
    decision threshold with the best micro-F1 on eval, logged as `val_<task>_threshold`; the
    Trainer folds the kept epoch's into the model (MultilabelOutput), so that what is logged is
    what the exported model scores.

    Runs before other callbacks see the epoch's logs, so checkpoints and tuners can use them.
    """

    def __init__(self, dataset, tasks, class_names, objective_weights=None):
        super().__init__()
        self.dataset = dataset
        self.tasks = tasks
        self.class_names = class_names
        self.objective_weights = objective_weights

    def _decoded(self, inputs, targets):
        """(labels, predictions) of one batch as the Evaluator compares them."""
        probabilities = self.model(inputs, training=False)
        token_mask = tf.not_equal(inputs[TOKEN_IDS], PAD_ID)
        predictions = decode_outputs(self.tasks, probabilities, self.class_names, token_mask,
                                     crf=crf_scores(self.model, self.tasks))
        labels = {label_key(t): head_of(t).eval_label(targets[t.name], self.class_names[t.name])
                  for t in self.tasks}
        return labels, predictions

    def set_model(self, model):
        super().set_model(model)
        # One graph for the model and the decoder (a Viterbi scan run eagerly is slow), per model
        # (the Tuner builds one per trial), traced once for every batch shape: batches are cut to
        # their longest text, and a trace per length costs seconds. Without autograph, as the
        # export's signatures (the same model and decoder): converting their Python costs seconds.
        self._decode_batch = tf.function(self._decoded, autograph=False,
                                         input_signature=list(self.dataset.element_spec))

    def scores(self):
        batches = [({k: v.numpy() for k, v in labels.items()},
                    {k: v.numpy() for k, v in predictions.items()})
                   for labels, predictions in (self._decode_batch(inputs, targets)
                                               for inputs, targets in self.dataset)]
        thresholds = {}
        for task in self.tasks:
            if task.type == MULTILABEL:
                key, output = label_key(task), task_type(task).eval_output(task)
                thresholds[task.name] = best_threshold(
                    np.concatenate([labels[key] for labels, _ in batches]),
                    np.concatenate([predictions[output] for _, predictions in batches]))
        scorer = TaskScorer(self.tasks)
        for labels, predictions in batches:
            for task in self.tasks:
                if task.name in thresholds:  # scored at 0.5 as the shifted model will be
                    output = task_type(task).eval_output(task)
                    predictions[output] = _shifted(predictions[output], thresholds[task.name])
            scorer.add(labels, predictions)
        scores = scorer.result()
        for name, threshold in thresholds.items():
            scores[name]["threshold"] = threshold
        return scores

    def __deepcopy__(self, memo):
        # Keras Tuner deep-copies callbacks per trial; the eval dataset cannot be, and need not be.
        return copy.copy(self)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = self.scores()
        for task, values in scores.items():
            for metric, value in values.items():
                if metric != "examples":
                    logs[f"val_{task}_{metric}"] = value
        logs[f"val_{OBJECTIVE}"] = objective(scores, self.tasks, self.objective_weights)


def _shifted(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Scores whose 0.5 is `threshold`: sigmoid(logit(s) - logit(threshold))."""
    scores = np.clip(np.asarray(scores, np.float64), 1e-12, 1 - 1e-12)
    return 1 / (1 + np.exp(-(np.log(scores) - np.log1p(-scores) - logit(threshold))))


class LearnedLossWeights(keras.callbacks.Callback):
    """Logs each task's learned loss weight as `<task>_loss_weight` after every epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({f"{task}_loss_weight": weight
                         for task, weight in self.model.learned_loss_weights().items()})


def cosine_decay(epochs: int) -> keras.callbacks.LearningRateScheduler:
    """Keras' scheduler lowering the rate the model was compiled with (the config's, or a tuning
    trial's) down half a cosine, epoch by epoch, to near 0 at the last of `epochs`: long steps while
    the loss is far from a minimum, short ones to settle into it. Keras logs `learning_rate`."""
    start = {}

    def rate(epoch: int, current: float) -> float:
        if epoch == 0:  # every fit (each tuning trial too) starts from its compiled rate
            start["rate"] = current
        return start["rate"] * 0.5 * (1 + math.cos(math.pi * epoch / epochs))

    return keras.callbacks.LearningRateScheduler(rate)


def epoch_callbacks(config, epochs: int, evaluation, class_names) -> list:
    """The callbacks every fit runs (each tuning trial and the Trainer), in the order they must run:
    with `training.ema_momentum`, Keras swaps the weights' moving average into the model at each
    epoch's end, before the callbacks after it time, score, keep or export the model."""
    averaged = ([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
                if config.training.ema_momentum else [])
    callbacks = averaged + [EpochSeconds(), ValidationScores(
        evaluation, config.tasks, class_names, config.tuning.objective_weights)]
    if config.training.learning_rate_schedule == "cosine":
        callbacks.append(cosine_decay(epochs))
    if config.training.loss_weighting == "uncertainty":
        callbacks.append(LearnedLossWeights())
    return callbacks


class TimeLimit(keras.callbacks.Callback):
    """`training.max_minutes`: stops training after the epoch that leaves no time for another
    (the mean epoch so far) within `seconds` of wall time; the best epoch so far is kept
    (best_epoch_callback restores it at the end). A safety net: `epochs` is the plan (the cosine
    decay's end), this bounds a slower machine or a bigger dataset than expected.

    Under multi-worker training the chief's clock decides and every worker gets its decision
    (an all-reduce of the chief's vote), so that all stop after the same epoch."""

    def __init__(self, seconds: float, strategy: tf.distribute.Strategy, clock=time.monotonic):
        super().__init__()
        self.seconds, self.strategy, self.clock = seconds, strategy, clock
        self.stopped_after = None

    def on_train_begin(self, logs=None):
        self.started, self.stopped_after = self.clock(), None

    def _decided(self, stop: bool) -> bool:
        if in_multi_worker_mode(self.strategy):
            vote = self.strategy.run(lambda: tf.constant(float(stop and is_chief(self.strategy))))
            return float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, vote, axis=None)) > 0
        return stop

    def on_epoch_end(self, epoch, logs=None):
        elapsed = self.clock() - self.started
        if self._decided(elapsed + elapsed / (epoch + 1) > self.seconds):
            self.model.stop_training = True
            self.stopped_after = epoch + 1
            message = (f"Trainer: stopped after epoch {epoch + 1} at training.max_minutes "
                       f"({self.seconds / 60:g} min; {elapsed / 60:.1f} min spent, another epoch "
                       "would pass it); the best epoch so far is kept")
            logging.info(message)
            say(message)


class EpochSeconds(keras.callbacks.Callback):
    """Logs `epoch_seconds`: the wall time of each epoch's training steps, without its validation.
    Goes first among the callbacks (after the moving average's swap), so that it times the steps
    alone."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):  # fit's validation pass starts: the steps are done
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = round(self.seconds if self.seconds is not None
                                          else time.perf_counter() - self.started, 2)


class ExpertLoad(keras.callbacks.Callback):
    """After each epoch, writes each router's share of routed tokens per expert on `batches` (model
    inputs), as `probe` (the trained model's GateProbe) measures it, as TensorBoard scalars
    `expert_load/<layer>/<router>/expert_<i>` under `log_dir`/experts: a router collapsing onto a
    few experts shows as their lines rising."""

    def __init__(self, log_dir: str, batches, probe: GateProbe):
        super().__init__()
        self.log_dir, self.batches, self.probe = log_dir, batches, probe

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "experts"))

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            for layer, routers in self.probe(self.batches).items():
                for router, stats in routers.items():
                    for i, load in enumerate(stats["load"]):
                        tf.summary.scalar(f"expert_load/{layer}/{router}/expert_{i}", load, step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class EpochProgress(keras.callbacks.Callback):
    """A console progress line per epoch (the rest of Keras' output goes to the run's log): the
    epoch, its validation objective and its seconds. Goes after ValidationScores and EpochSeconds."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        detail = [f"val_{OBJECTIVE} {logs[f'val_{OBJECTIVE}']:.4f}"] if f"val_{OBJECTIVE}" in logs else []
        if "epoch_seconds" in logs:
            detail.append(f"{logs['epoch_seconds']:.0f} s")
        progress(f"{self.label} epoch", epoch + 1, self.epochs, ", ".join(detail))


class TrialProgress(keras.callbacks.Callback):
    """A console progress line per finished tuning trial, with its best validation objective. Keras
    Tuner copies the callbacks of every trial; the copies share the count."""

    def __init__(self, trials: int):
        super().__init__()
        self.trials, self.finished, self.best = trials, [0], None

    def __deepcopy__(self, memo):
        return copy.copy(self)

    def on_train_begin(self, logs=None):
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(f"val_{OBJECTIVE}")
        if value is not None and (self.best is None or value > self.best):
            self.best = value

    def on_train_end(self, logs=None):
        self.finished[0] += 1
        detail = f"best val_{OBJECTIVE} {self.best:.4f}" if self.best is not None else ""
        progress("Tuner trial", self.finished[0], self.trials, detail)
