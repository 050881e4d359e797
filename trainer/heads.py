"""The TensorFlow side of each task type (mtmoe.core.tasks has the rest): how Transform turns its
labels into ids, how the Trainer turns those into targets and scores them (output layer, loss, Keras
metrics), and how the serving graph decodes its outputs into strings. With `model.crf`, token
tagging's output layer also holds a linear-chain CRF's scores, which its loss and decoder read.
"""
from typing import Dict, List, Optional

import keras
import tensorflow as tf
from keras import ops

from mtmoe.core.config import CLASSIFICATION, MULTILABEL, TOKEN_TAGGING
from mtmoe.core.feature_names import PAD_ID
from mtmoe.core.metrics import PROBABILITY_FLOOR, SIGMOID_CLIP, logit
from mtmoe.core.file_names import KERAS_PACKAGE
from mtmoe.core.tasks import UNLABELLED, label_vocabulary_name, task_type
from mtmoe.trainer.decoding import bio_constraints, constrained_viterbi, crf_log_likelihood


def _ragged_strings(raw) -> tf.RaggedTensor:
    """A raw label feature (sparse when some examples lack it, dense [B, k] otherwise) as [B, None]."""
    if isinstance(raw, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(raw)
    return tf.RaggedTensor.from_tensor(raw)


def _label_ids(task, raw, tft, width: int) -> tf.Tensor:
    """Label strings -> ids [B, width] (vocabulary + one reserved unknown id), -1 where absent.
    A task's out-of-scope label stays out of the vocabulary: it gets the reserved last id, so that
    every stage knows the out-of-scope class by its place (mtmoe.core.tasks.class_names_from_vocabulary)."""
    values = _ragged_strings(raw)
    in_scope = (tf.ragged.boolean_mask(values, tf.not_equal(values, task.out_of_scope_label))
                if task.out_of_scope_label else values)
    vocabulary = tft.vocabulary(in_scope, vocab_filename=label_vocabulary_name(task))
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
    """Micro-averaged F1 of sigmoid scores >= 0.5 (the threshold, see MultilabelOutput) over
    labelled rows (targets >= 0)."""

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


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class CRFTagOutput(keras.layers.Dense):
    """A token-tagging output layer (per-token softmax over the tags) that also holds a linear-chain
    CRF's learned scores: `transitions[i, j]` for tag j right after tag i, `start_scores[j]` for tag
    j opening a text (both start at 0). The CRF loss (CRFLoss) and the Viterbi decoder read them."""

    def build(self, input_shape):
        super().build(input_shape)
        self.transitions = self.add_weight(shape=(self.units, self.units), initializer="zeros",
                                           name="transitions")
        self.start_scores = self.add_weight(shape=(self.units,), initializer="zeros",
                                            name="start_scores")


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MultilabelOutput(keras.layers.Dense):
    """A multi-label output layer: `sigmoid(x W + b - shift)`, with `shift` (not trained, 0 until
    set) the logit of the decision threshold chosen on the eval split after training
    (`set_threshold`). A score of 0.5 is then the task's threshold in every consumer: the Keras
    metric, the Evaluator, the served labels."""

    def __init__(self, units, **kwargs):
        kwargs.pop("activation", None)
        super().__init__(units, activation=None, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.shift = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     name="threshold_shift")

    def call(self, inputs):
        return ops.sigmoid(super().call(inputs) - self.shift)

    def set_threshold(self, threshold: float) -> None:
        """Moves the decision threshold of the current scores to 0.5: a score s becomes
        sigmoid(logit(s) - logit(threshold))."""
        self.shift.assign(self.shift + logit(threshold))


def crf_scores(model, tasks) -> Dict[str, tuple]:
    """{task: (transitions, start_scores)} for the tasks the model tags with a CRF."""
    layers = {task.name: model.get_layer(task.name) for task in tasks}
    return {name: (layer.transitions, layer.start_scores) for name, layer in layers.items()
            if isinstance(layer, CRFTagOutput)}


class CRFLoss(keras.losses.Loss):
    """The negative log-likelihood of each labelled text's tag sequence under the linear-chain CRF
    of `layer` (CRFTagOutput) over the output's log-probabilities, divided by the text's tokens
    (the scale of the per-token cross-entropy), averaged over labelled texts."""

    def __init__(self, layer, name="crf_negative_log_likelihood", **kwargs):
        super().__init__(name=name, **kwargs)
        self.layer = layer

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        mask = y_true >= 0
        log_probs = tf.math.log(tf.maximum(tf.cast(y_pred, tf.float32), 1e-12))
        likelihood = crf_log_likelihood(log_probs, y_true, mask, self.layer.transitions,
                                        self.layer.start_scores)
        tokens = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1)
        labelled = tf.cast(tokens > 0, tf.float32)
        per_token = -likelihood / tf.maximum(tokens, 1.0)
        return tf.reduce_sum(per_token * labelled) / tf.maximum(tf.reduce_sum(labelled), 1.0)


def task_loss(task, training, model):
    """The loss a task trains with: the CRF's when the model has one for it, else its head's."""
    if task.name in crf_scores(model, [task]):
        return CRFLoss(model.get_layer(task.name))
    return head_of(task).loss(training)


def _output_layer(task, features, num_classes: int, activation: str, layer=keras.layers.Dense,
                  name=None):
    """A task's tower (one GELU layer as wide as its input) and its float32 output layer, named
    after the task (the model's output name) unless `name` says otherwise."""
    name = name or task.name
    x = keras.layers.Dense(features.shape[-1], activation="gelu", name=f"{name}_tower")(features)
    return layer(num_classes, activation=activation, dtype="float32", name=name)(x)


def token_level_output_name(task_name: str) -> str:
    """The training-only output holding a classification task's prediction at every token."""
    return f"{task_name}_per_token"


def token_level_classes(task, sequence, num_classes: int):
    """[B, L, d] -> [B, L, C]: the class probabilities at every token (model.token_level_classes)."""
    return _output_layer(task, sequence, num_classes, "softmax",
                         name=token_level_output_name(task.name))


def token_level_loss(token_ids, labels, probabilities, label_smoothing=0.0):
    """Cross-entropy of each token's prediction against its text's label, averaged over the text's
    tokens, then over labelled texts (an unlabelled text, -1, and padding count for nothing)."""
    token_labels = tf.where(tf.not_equal(token_ids, PAD_ID),
                            tf.cast(labels, tf.int32)[:, None], -1)
    return MaskedSparseCrossEntropy(label_smoothing)(token_labels, probabilities)


class ClassificationHead:
    """One label per example: softmax over the label vocabulary, accuracy."""

    def transform(self, task, raw, tft, text):
        return _label_ids(task, raw, tft, width=1)[:, 0]

    def targets(self, labels, num_classes):
        return tf.cast(labels, tf.int32)

    def head(self, task, sequence, pooled, num_classes, model_config):
        return _output_layer(task, pooled, num_classes, "softmax")

    def loss(self, training):
        return MaskedSparseCrossEntropy(training.label_smoothing)

    def keras_metrics(self):
        return [_MaskedMean(name="accuracy")]

    def calibrated(self, probs, temperature: float):
        """softmax(log p / T): the probabilities of the logits divided by the temperature."""
        return tf.nn.softmax(tf.math.log(tf.maximum(probs, PROBABILITY_FLOOR)) / temperature)

    def decode(self, task, probs, class_names, token_mask, crf=None):
        return {f"{task.name}_label": tf.gather(class_names, tf.argmax(probs, axis=-1)),
                f"{task.name}_score": tf.reduce_max(probs, axis=-1)}

    def eval_label(self, targets, class_names):
        return targets


class MultilabelHead:
    """Any number of labels per example: one sigmoid per label, micro-F1 at the threshold chosen
    on eval (MultilabelOutput)."""

    def transform(self, task, raw, tft, text):
        return _label_ids(task, raw, tft, width=task.max_labels)

    def targets(self, labels, num_classes):
        multi_hot = tf.reduce_max(tf.one_hot(labels, num_classes), axis=1)
        labelled = tf.reduce_any(labels >= 0, axis=1, keepdims=True)
        return tf.where(labelled, multi_hot, float(UNLABELLED))

    def head(self, task, sequence, pooled, num_classes, model_config):
        return _output_layer(task, pooled, num_classes, None, MultilabelOutput)

    def loss(self, training):
        return MaskedBinaryCrossEntropy(training.label_smoothing)

    def keras_metrics(self):
        return [_MicroF1(name="micro_f1")]

    def calibrated(self, probs, temperature: float):
        """sigmoid(logit(p) / T): the threshold's 0.5 stays where it is."""
        probs = tf.clip_by_value(probs, SIGMOID_CLIP, 1 - SIGMOID_CLIP)
        return tf.sigmoid((tf.math.log(probs) - tf.math.log1p(-probs)) / temperature)

    def decode(self, task, probs, class_names, token_mask, crf=None):
        order = tf.argsort(probs, axis=-1, direction="DESCENDING")
        return {f"{task.name}_labels": tf.gather(class_names, order),
                f"{task.name}_scores": tf.gather(probs, order, batch_dims=1)}

    def eval_label(self, targets, class_names):
        return targets


class TokenTaggingHead:
    """One tag per token (BIO): per-token softmax, decoded to a well-formed BIO sequence."""

    def transform(self, task, raw, tft, text):
        return _label_ids(task, raw, tft, width=text.max_tokens)

    def targets(self, labels, num_classes):
        return tf.cast(labels, tf.int32)

    def head(self, task, sequence, pooled, num_classes, model_config):
        return _output_layer(task, sequence, num_classes, "softmax",
                             CRFTagOutput if model_config.crf else keras.layers.Dense)

    def loss(self, training):
        return MaskedSparseCrossEntropy(training.label_smoothing,
                                        token_mean=training.tagging_loss == "token_mean")

    def keras_metrics(self):
        return [_MaskedMean(name="token_accuracy")]

    def decode(self, task, probs, class_names, token_mask, crf=None):
        """The most probable well-formed BIO sequence (never an I-x that opens a span, see
        mtmoe.trainer.decoding), scored with the CRF's transitions when `crf` gives them, with
        each chosen tag's probability."""
        allowed, start = bio_constraints(list(class_names))
        ids = constrained_viterbi(tf.math.log(tf.maximum(tf.cast(probs, tf.float32), 1e-12)),
                                  token_mask, allowed, start, *(crf or ()))
        scores = tf.gather(tf.cast(probs, tf.float32), ids, batch_dims=2)
        return {f"{task.name}_tags": tf.where(token_mask, tf.gather(class_names, ids), ""),
                f"{task.name}_scores": tf.where(token_mask, scores, 0.0)}

    def eval_label(self, targets, class_names):
        """Gold tags as strings ('' where unlabelled), so span metrics need no vocabulary."""
        return tf.where(targets >= 0, tf.gather(class_names, tf.maximum(targets, 0)), "")


HEADS = {CLASSIFICATION: ClassificationHead(), MULTILABEL: MultilabelHead(),
         TOKEN_TAGGING: TokenTaggingHead()}


def head_of(task):
    return HEADS[task.type]


def calibrate(tasks, probabilities, temperatures: Dict[str, float]):
    """The model's outputs with each task of `temperatures` ({task: T}, fitted on eval after
    training, see mtmoe.trainer.calibration) temperature-scaled."""
    calibrated = dict(probabilities)
    for task in tasks:
        if task.name in temperatures:
            calibrated[task.name] = head_of(task).calibrated(probabilities[task.name],
                                                             temperatures[task.name])
    return calibrated


def in_scope(probabilities, reject_below: float):
    """[B] whether each text is in scope: its arg-max is not the out-of-scope class (the last)
    and its top in-scope probability reaches `reject_below` (mtmoe.core.metrics.accepted)."""
    last = tf.shape(probabilities)[-1] - 1
    return tf.logical_and(
        tf.not_equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), last),
        tf.reduce_max(probabilities[:, :-1], axis=-1) >= reject_below)


def decode_outputs(tasks, probabilities, class_names: Dict[str, List[str]], token_mask,
                   pad_to=None, crf: Optional[Dict[str, tuple]] = None,
                   reject_below: Optional[Dict[str, float]] = None):
    """The tasks' model outputs -> {decoded strings and scores per task, plus each task's raw
    output} (a model's training-only outputs are left out). With
    `pad_to`, token-level outputs of a batch cut to its longest text are padded back to that many
    tokens, so that their shape stays fixed; they hold '' and 0 at every padding position, so that
    no output depends on the other texts of the batch. `crf`: each CRF-tagged task's scores
    (crf_scores). `reject_below`: {task: threshold} of the tasks that answer out of scope, whose
    `<task>_in_scope` output is added (in_scope)."""
    outputs = {task.name: probabilities[task.name] for task in tasks}
    for name, threshold in (reject_below or {}).items():
        outputs[f"{name}_in_scope"] = in_scope(probabilities[name], threshold)
    for task in tasks:
        decoded = head_of(task).decode(task, probabilities[task.name], class_names[task.name],
                                       token_mask, (crf or {}).get(task.name))
        if pad_to is not None and task_type(task).per_token:
            raw = tf.where(token_mask[..., None], probabilities[task.name], 0.0)
            decoded = {key: _pad_tokens(value, pad_to)
                       for key, value in {task.name: raw, **decoded}.items()}
        outputs.update(decoded)
    return outputs


def _pad_tokens(value, length):
    """`value` [batch, tokens, ...] padded along its token axis to `length`."""
    padding = [[0, 0], [0, length - tf.shape(value)[1]]] + [[0, 0]] * (len(value.shape) - 2)
    return tf.pad(value, padding, constant_values="" if value.dtype == tf.string else 0)
