"""The registry of task types: everything that differs between task types, stage by stage.

A task type says how its labels are transformed (Transform), turned into model targets, predicted by a
head and scored by a loss (Trainer), decoded into strings (serving), and counted into metrics (Evaluator
and test scoring). Adding a task type means adding one class here, its entry in TASK_TYPES and its name in
mtmoe.config.TASK_TYPE_NAMES.

Label conventions shared by all stages: Transform maps label strings to ids through a vocabulary with
one reserved id for labels it never saw (the last class, named UNKNOWN_LABEL), and writes -1 where a
label is absent. A -1 target means "unlabelled": it adds nothing to the loss or the metrics.
"""
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mtmoe import metrics
from mtmoe.config import CLASSIFICATION, MULTILABEL, TOKEN_TAGGING, TaskConfig
from mtmoe.decoding import bio_constraints, constrained_viterbi
from mtmoe.feature_names import OVERALL, TOKENS

UNLABELLED = -1
UNKNOWN_LABEL = "<unknown>"
OBJECTIVE = "objective"


def label_key(task) -> str:
    """Transformed feature (and TFMA label key) holding a task's labels."""
    return f"{task.name}_label"


def label_vocabulary_name(task) -> str:
    return f"{task.name}_labels"


def _ragged_strings(raw) -> tf.RaggedTensor:
    """A raw label feature (sparse when some examples lack it, dense [B, k] otherwise) as [B, None]."""
    if isinstance(raw, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(raw)
    return tf.RaggedTensor.from_tensor(raw)


def _label_ids(task, raw, tft, width: int) -> tf.Tensor:
    """Label strings -> ids [B, width] (vocabulary + one reserved unknown id), -1 where absent."""
    values = _ragged_strings(raw)
    vocabulary = tft.vocabulary(values, vocab_filename=label_vocabulary_name(task))
    ids = tft.apply_vocabulary(values, vocabulary, num_oov_buckets=1)
    return ids.to_tensor(default_value=UNLABELLED, shape=[None, width])


class _MaskedMean(keras.metrics.Metric):
    """Mean of per-item hits over labelled items (targets >= 0)."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(y_true >= 0, "float32")
        correct = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), ops.maximum(y_true, 0)), "float32")
        self.hits.assign_add(ops.sum(correct * mask))
        self.count.assign_add(ops.sum(mask))

    def result(self):
        return self.hits / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.hits.assign(0.0)
        self.count.assign(0.0)


class _MicroF1(keras.metrics.Metric):
    """Micro-averaged F1 of sigmoid scores >= 0.5 over labelled rows (targets >= 0)."""

    def __init__(self, name="micro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        rows = ops.cast(ops.min(y_true, axis=-1, keepdims=True) >= 0, "float32")
        predicted = ops.cast(y_pred >= 0.5, "float32") * rows
        gold = ops.maximum(y_true, 0.0) * rows
        self.tp.assign_add(ops.sum(predicted * gold))
        self.fp.assign_add(ops.sum(predicted * (1 - gold)))
        self.fn.assign_add(ops.sum((1 - predicted) * gold))

    def result(self):
        return 2 * self.tp / ops.maximum(2 * self.tp + self.fp + self.fn, 1.0)

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)


class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy averaged over labelled examples only.

    For [B] targets: mean over examples with a target >= 0. For [B, L] token targets: each example's
    mean over its labelled tokens, then the mean over examples with at least one labelled token; or,
    with `token_mean`, the mean over every labelled token of the batch (a long text weighs more).
    With label smoothing e: `(1 - e) CE + e * mean_c(-log p_c)`.
    """

    def __init__(self, label_smoothing=0.0, token_mean=False, name="masked_sparse_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.token_mean = token_mean

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(y_true >= 0, "float32")
        y_pred = ops.cast(y_pred, "float32")
        loss = keras.losses.sparse_categorical_crossentropy(ops.maximum(y_true, 0), y_pred)
        if self.label_smoothing:
            uniform = -ops.mean(ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1)
            loss = (1 - self.label_smoothing) * loss + self.label_smoothing * uniform
        if len(loss.shape) == 2 and self.token_mean:
            return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)
        if len(loss.shape) == 2:
            tokens = ops.sum(mask, axis=-1)
            loss = ops.sum(loss * mask, axis=-1) / ops.maximum(tokens, 1.0)
            mask = ops.cast(tokens > 0, "float32")
        return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "token_mean": self.token_mean}


class MaskedBinaryCrossEntropy(keras.losses.Loss):
    """Per-example mean binary cross-entropy, averaged over labelled rows (no -1 target).

    With label smoothing e, targets become `y (1 - e) + e / 2`.
    """

    def __init__(self, label_smoothing=0.0, name="masked_binary_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        rows = ops.cast(ops.min(y_true, axis=-1) >= 0, "float32")
        targets = ops.maximum(y_true, 0.0) * (1 - self.label_smoothing) + self.label_smoothing / 2
        loss = keras.losses.binary_crossentropy(targets, ops.cast(y_pred, "float32"))
        return ops.sum(loss * rows) / ops.maximum(ops.sum(rows), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class Classification:
    """One label per example: softmax over the label vocabulary, accuracy."""

    primary_metric = "accuracy"
    decoded_outputs = ("label", "score")
    per_token = False  # targets are per example, not per token  # serving outputs <task>_label, <task>_score

    def transform(self, task, raw, tft, text):
        return _label_ids(task, raw, tft, width=1)[:, 0]

    def targets(self, labels, num_classes):
        return tf.cast(labels, tf.int32)

    def head(self, task, sequence, pooled, num_classes):
        x = keras.layers.Dense(pooled.shape[-1], activation="gelu", name=f"{task.name}_tower")(pooled)
        return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=task.name)(x)

    def loss(self, training):
        return MaskedSparseCrossEntropy(training.label_smoothing)

    def keras_metrics(self):
        return [_MaskedMean(name="accuracy")]

    def decode(self, task, probs, class_names, token_mask):
        return {f"{task.name}_label": tf.gather(class_names, tf.argmax(probs, axis=-1)),
                f"{task.name}_score": tf.reduce_max(probs, axis=-1)}

    def prediction_json(self, task, outputs, i):
        return {"label": _text(outputs[f"{task.name}_label"][i]),
                "score": float(outputs[f"{task.name}_score"][i])}

    def eval_output(self, task):
        return task.name

    def eval_label(self, targets, class_names):
        return targets

    def count(self, label, prediction) -> Optional[Dict[str, int]]:
        label = int(np.asarray(label).reshape(-1)[0])
        if label < 0:
            return None
        return {"correct": int(np.argmax(prediction) == label), "total": 1}

    def exact(self, label, prediction) -> Optional[bool]:
        counts = self.count(label, prediction)
        return None if counts is None else bool(counts["correct"])

    def score(self, counts):
        return {"accuracy": counts.get("correct", 0) / max(counts.get("total", 0), 1),
                "examples": counts.get("total", 0)}

    breakdown_kind = "confusion"

    def breakdown(self, label, prediction, class_names) -> Optional[Dict[str, Dict[str, int]]]:
        """{gold class: {predicted class: 1}}: one cell of the confusion matrix."""
        label = int(np.asarray(label).reshape(-1)[0])
        if label < 0:
            return None
        return {class_names[label]: {class_names[int(np.argmax(prediction))]: 1}}


class Multilabel:
    """Any number of labels per example: one sigmoid per label, micro-F1 at 0.5."""

    primary_metric = "micro_f1"
    decoded_outputs = ("labels", "scores")
    per_token = False

    def transform(self, task, raw, tft, text):
        return _label_ids(task, raw, tft, width=task.max_labels)

    def targets(self, labels, num_classes):
        multi_hot = tf.reduce_max(tf.one_hot(labels, num_classes), axis=1)
        labelled = tf.reduce_any(labels >= 0, axis=1, keepdims=True)
        return tf.where(labelled, multi_hot, float(UNLABELLED))

    def head(self, task, sequence, pooled, num_classes):
        x = keras.layers.Dense(pooled.shape[-1], activation="gelu", name=f"{task.name}_tower")(pooled)
        return keras.layers.Dense(num_classes, activation="sigmoid", dtype="float32", name=task.name)(x)

    def loss(self, training):
        return MaskedBinaryCrossEntropy(training.label_smoothing)

    def keras_metrics(self):
        return [_MicroF1(name="micro_f1")]

    def decode(self, task, probs, class_names, token_mask):
        order = tf.argsort(probs, axis=-1, direction="DESCENDING")
        return {f"{task.name}_labels": tf.gather(class_names, order),
                f"{task.name}_scores": tf.gather(probs, order, batch_dims=1)}

    def prediction_json(self, task, outputs, i, threshold=0.5):
        """The labels whose score reaches the threshold, best first."""
        pairs = zip(outputs[f"{task.name}_labels"][i], outputs[f"{task.name}_scores"][i])
        chosen = [(_text(label), float(score)) for label, score in pairs if score >= threshold]
        return {"labels": [label for label, _ in chosen], "scores": [score for _, score in chosen]}

    def eval_output(self, task):
        return task.name

    def eval_label(self, targets, class_names):
        return targets

    def count(self, label, prediction) -> Optional[Dict[str, int]]:
        label = np.asarray(label)
        if label.min() < 0:
            return None
        return metrics.multilabel_counts(label, prediction)

    def exact(self, label, prediction) -> Optional[bool]:
        counts = self.count(label, prediction)
        return None if counts is None else counts["fp"] == counts["fn"] == 0

    def score(self, counts):
        scores = metrics.f1_from_counts(counts)
        return {"micro_f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}

    breakdown_kind = "per_class"

    def breakdown(self, label, prediction, class_names) -> Optional[Dict[str, Dict[str, int]]]:
        """{label: {"tp", "fp", "fn"}} for each label that is gold or predicted."""
        label = np.asarray(label)
        if label.min() < 0:
            return None
        return {class_names[c]: metrics.multilabel_counts(label[c:c + 1], np.asarray(prediction)[c:c + 1])
                for c in np.flatnonzero((label > 0.5) | (np.asarray(prediction) >= 0.5))}


class TokenTagging:
    """One tag per token (BIO): per-token softmax, span F1 as conlleval counts it."""

    primary_metric = "span_f1"
    decoded_outputs = ("tags", "scores")
    per_token = True  # targets [B, L], one per token

    def transform(self, task, raw, tft, text):
        return _label_ids(task, raw, tft, width=text.max_tokens)

    def targets(self, labels, num_classes):
        return tf.cast(labels, tf.int32)

    def head(self, task, sequence, pooled, num_classes):
        x = keras.layers.Dense(sequence.shape[-1], activation="gelu", name=f"{task.name}_tower")(sequence)
        return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=task.name)(x)

    def loss(self, training):
        return MaskedSparseCrossEntropy(training.label_smoothing,
                                        token_mean=training.tagging_loss == "token_mean")

    def keras_metrics(self):
        return [_MaskedMean(name="token_accuracy")]

    def decode(self, task, probs, class_names, token_mask):
        """The most probable well-formed BIO sequence (never an I-x that opens a span, see
        mtmoe.decoding), with each chosen tag's probability."""
        allowed, start = bio_constraints(list(class_names))
        ids = constrained_viterbi(tf.math.log(tf.maximum(tf.cast(probs, tf.float32), 1e-12)),
                                  token_mask, allowed, start)
        scores = tf.gather(tf.cast(probs, tf.float32), ids, batch_dims=2)
        return {f"{task.name}_tags": tf.where(token_mask, tf.gather(class_names, ids), ""),
                f"{task.name}_scores": tf.where(token_mask, scores, 0.0)}

    def prediction_json(self, task, outputs, i):
        n = sum(1 for token in outputs[TOKENS][i] if _text(token))
        return {"tokens": [_text(t) for t in outputs[TOKENS][i][:n]],
                "tags": [_text(t) for t in outputs[f"{task.name}_tags"][i][:n]],
                "scores": [round(float(s), 4) for s in outputs[f"{task.name}_scores"][i][:n]]}

    def eval_output(self, task):
        return f"{task.name}_tags"

    def eval_label(self, targets, class_names):
        """Gold tags as strings ('' where unlabelled), so span metrics need no vocabulary."""
        return tf.where(targets >= 0, tf.gather(class_names, tf.maximum(targets, 0)), "")

    @staticmethod
    def _labelled_tags(label, prediction):
        """(gold, predicted) tag strings at the labelled positions (gold tag not '')."""
        pairs = [(_text(g), _text(p)) for g, p in zip(np.asarray(label).reshape(-1),
                                                     np.asarray(prediction).reshape(-1))]
        labelled = [(g, p) for g, p in pairs if g]
        return [g for g, _ in labelled], [p for _, p in labelled]

    def count(self, label, prediction) -> Optional[Dict[str, int]]:
        gold, predicted = self._labelled_tags(label, prediction)
        return metrics.span_counts(gold, predicted) if gold else None

    def exact(self, label, prediction) -> Optional[bool]:
        """Every labelled token's tag right (the sentence-level criterion of SLU overall accuracy)."""
        gold, predicted = self._labelled_tags(label, prediction)
        return gold == predicted if gold else None

    def score(self, counts):
        scores = metrics.f1_from_counts(counts)
        return {"span_f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}

    breakdown_kind = "per_class"

    def breakdown(self, label, prediction, class_names) -> Optional[Dict[str, Dict[str, int]]]:
        """{span type: {"tp", "fp", "fn"}}."""
        gold, predicted = self._labelled_tags(label, prediction)
        return metrics.span_counts_by_type(gold, predicted) if gold else None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


TASK_TYPES = {CLASSIFICATION: Classification(), MULTILABEL: Multilabel(), TOKEN_TAGGING: TokenTagging()}


def task_type(task):
    return TASK_TYPES[task.type]


def tasks_from_output_names(names) -> list:
    """The tasks a serving signature answers for, read off its output names (`<task>_<output>`),
    for clients that have only the signature."""
    names = set(names)
    tasks = []
    for type_name, kind in TASK_TYPES.items():
        first, *rest = kind.decoded_outputs
        for name in sorted(n for n in names if n.endswith("_" + first)):
            task = name[:-len(first) - 1]
            if all(f"{task}_{output}" in names for output in rest):
                tasks.append(TaskConfig(task, type_name, task))
    return tasks


def prediction_rows(texts, outputs, tasks) -> List[dict]:
    """Decoded serving outputs (columns indexed by example) -> one JSON-ready dict per text."""
    return [{"text": text, **{task.name: task_type(task).prediction_json(task, outputs, i)
                              for task in tasks}}
            for i, text in enumerate(texts)]


def class_names_from_vocabulary(vocabulary: List[str]) -> List[str]:
    """Output classes of a task: its label vocabulary, then the reserved unknown-label class."""
    return list(vocabulary) + [UNKNOWN_LABEL]


def decode_outputs(tasks, probabilities, class_names: Dict[str, List[str]], token_mask,
                   pad_to=None):
    """Model outputs -> {decoded strings and scores per task, plus each task's raw output}. With
    `pad_to`, token-level outputs of a batch cut to its longest text are padded back to that many
    tokens, so that their shape stays fixed; they hold '' and 0 at every padding position, so that
    no output depends on the other texts of the batch."""
    outputs = dict(probabilities)
    for task in tasks:
        kind = task_type(task)
        decoded = kind.decode(task, probabilities[task.name], class_names[task.name], token_mask)
        if pad_to is not None and kind.per_token:
            raw = tf.where(token_mask[..., None], probabilities[task.name], 0.0)
            decoded = {key: _pad_tokens(value, pad_to)
                       for key, value in {task.name: raw, **decoded}.items()}
        outputs.update(decoded)
    return outputs


def _pad_tokens(value, length):
    """`value` [batch, tokens, ...] padded along its token axis to `length`."""
    padding = [[0, 0], [0, length - tf.shape(value)[1]]] + [[0, 0]] * (len(value.shape) - 2)
    return tf.pad(value, padding, constant_values="" if value.dtype == tf.string else 0)


class TaskScorer:
    """Accumulates per-task scores and overall accuracy over batches of labels and predictions.

    `labels` are keyed by label_key(task), `predictions` by each type's eval_output(task): the forms
    of the `transform_features` and `serving_examples` signatures. The Evaluator's TFMA metric counts
    with the same `count` functions. Given each task's class names, it also accumulates each task's
    breakdown (confusion matrix, or counts per class / span type).
    """

    def __init__(self, tasks, class_names: Optional[Dict[str, List[str]]] = None):
        self.tasks = tasks
        self.class_names = class_names
        self.counts = {task.name: {} for task in tasks}
        self.breakdowns = {task.name: {} for task in tasks}
        self.overall = {"correct": 0, "total": 0}

    def add(self, labels, predictions) -> None:
        size = len(next(iter(labels.values())))
        for i in range(size):
            verdicts = []
            for task in self.tasks:
                kind = task_type(task)
                label, prediction = labels[label_key(task)][i], predictions[kind.eval_output(task)][i]
                metrics.add_counts(self.counts[task.name], kind.count(label, prediction) or {})
                if self.class_names is not None:
                    metrics.add_nested_counts(self.breakdowns[task.name], kind.breakdown(
                        label, prediction, self.class_names[task.name]) or {})
                verdicts.append(kind.exact(label, prediction))
            verdicts = [v for v in verdicts if v is not None]
            if verdicts:
                self.overall["total"] += 1
                self.overall["correct"] += all(verdicts)

    def result(self) -> Dict[str, Dict[str, float]]:
        scores = {task.name: task_type(task).score(self.counts[task.name]) for task in self.tasks}
        scores[OVERALL] = {"accuracy": self.overall["correct"] / max(self.overall["total"], 1),
                           "examples": self.overall["total"]}
        return scores

    def breakdown(self) -> Dict[str, Dict[str, object]]:
        """{task: {"kind": "confusion" | "per_class", "counts": {row: {column: count}}}}."""
        return {task.name: {"kind": task_type(task).breakdown_kind,
                            "counts": self.breakdowns[task.name]} for task in self.tasks}


def objective(scores: Dict[str, Dict[str, float]], tasks, weights: Optional[Dict[str, float]] = None
              ) -> float:
    """Weighted mean of each task's primary metric (plain mean without weights; unnamed tasks get 0).

    Unlike the weighted loss, it does not depend on the loss weights, so trials that train with
    different weights are compared on the same scale.
    """
    weights = weights or {task.name: 1.0 for task in tasks}
    total = sum(weights.get(task.name, 0.0) for task in tasks)
    return sum(weights.get(task.name, 0.0) * scores[task.name][task_type(task).primary_metric]
               for task in tasks) / total
