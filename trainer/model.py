"""The multi-task Keras 3 model: shared embeddings and trunk, one named float32 head per task.

    token ids, char ids -> embeddings [-> model.recurrent_layers x BiLSTM]
        -> N x (SelfAttention, feed-forward)
        -> per-task sequence
        -> per-task head (pooled for sentence tasks, per token for tagging)

The trunk (config `model.trunk`) decides the feed-forward layers: `dense` everywhere; `mmoe`, dense
blocks then a last block of experts with one softmax gate per task; `deepseek_moe`, DeepSeekMoE in
every block, one shared router in the earlier blocks and one router per task in the last.
"""
from typing import Dict, List

import keras
import numpy as np
from keras import ops

from mtmoe.core.config import CLASSIFICATION
from mtmoe.core.feature_names import CHAR_IDS, PAD_ID, TOKEN_IDS
from mtmoe.core.tasks import task_type
from mtmoe.trainer.heads import (head_of, task_loss, token_level_classes, token_level_loss,
                                 token_level_output_name)
from mtmoe.trainer.layers import (CharacterEncoder, DeepSeekMoE, FeedForward, MaskedMeanPooling,
                                  MultiGateExperts, RecurrentEncoder, SelfAttention,
                                  TokenAndPositionEmbedding)

SHARED_ROUTER = "shared"
EMBEDDING = "embedding"
CHARACTERS = "characters"
LOG_VARIANCE = "task_log_variance"
RECURRENT = "recurrent"


class MultiTaskModel(keras.Model):
    """The functional model, with three optional training behaviours.

    Uncertainty weighting (`uncertainty_tasks`; Kendall et al., CVPR 2018): one learned log-variance
    s_t per task, and the loss `sum_t exp(-s_t) L_t + s_t / 2` (the classification form
    `L_t / sigma_t^2 + log sigma_t`), so each task's weight exp(-s_t) is learned with the model.

    FGM (`fgm_epsilon > 0`; Miyato et al. 2017): the token embedding table moves by
    `r = eps * g / ||g||_2`, g the loss gradient on it; the gradients at the perturbed point are
    added to the clean ones, and the table moves back before the update. With `fgm_every = k` only
    every k-th step is perturbed (about 1 + 1/k times a plain step's cost instead of twice); the
    others are plain steps. FGM steps use TensorFlow (the pipeline's backend).

    Token-level classes (`token_level_tasks`, model.token_level_classes): a classification task's
    `<task>_per_token` output is trained on the text's label at every token (heads.token_level_loss,
    weighted like the task); it has no compiled loss or metric and is not served.
    """

    def __init__(self, *args, fgm_epsilon=0.0, fgm_every=1, uncertainty_tasks=(),
                 token_level_tasks=None, label_smoothing=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.fgm_epsilon = fgm_epsilon
        self.fgm_every = fgm_every
        self.uncertainty_tasks = list(uncertainty_tasks)
        if self.uncertainty_tasks:
            self.log_variances = self.add_weight(shape=(len(self.uncertainty_tasks),),
                                                 initializer="zeros", name=LOG_VARIANCE)
        # {task: w_t} of the classification tasks also predicted at every token: their
        # `<task>_per_token` outputs are trained here, and left out of compiled losses and metrics.
        self.token_level_tasks = dict(token_level_tasks or {})
        self.label_smoothing = label_smoothing

    def _task_outputs(self, y_pred):
        """The outputs with a compiled loss: the tasks' (not the training-only per-token ones)."""
        if not self.token_level_tasks or y_pred is None:
            return y_pred
        extra = {token_level_output_name(name) for name in self.token_level_tasks}
        return {name: value for name, value in y_pred.items() if name not in extra}

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Keras pairs targets and outputs by position among the model's output names: each
        # per-token output gets its task's targets, and no metric.
        if self.token_level_tasks:
            y = {**y, **{token_level_output_name(name): y[name] for name in self.token_level_tasks}}
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, self._task_outputs(y_pred), sample_weight, training)
        if loss is None:
            return loss
        for name, weight in self.token_level_tasks.items():
            loss = loss + weight * token_level_loss(
                x[TOKEN_IDS], y[name], y_pred[token_level_output_name(name)], self.label_smoothing)
        if not self.uncertainty_tasks:
            return loss
        # Compiled with unit task weights, `loss` holds sum_t L_t (+ the balance losses).
        for i, name in enumerate(self.uncertainty_tasks):
            loss_t = ops.cast(self.loss[name](y[name], y_pred[name]), "float32")
            s = ops.cast(self.log_variances[i], "float32")
            loss = loss + (ops.exp(-s) - 1.0) * loss_t + 0.5 * s
        return loss

    def learned_loss_weights(self) -> Dict[str, float]:
        """{task: exp(-s_t)}: the weights uncertainty weighting has learned so far."""
        weights = np.exp(-ops.convert_to_numpy(self.log_variances))
        return {name: float(w) for name, w in zip(self.uncertainty_tasks, weights)}

    # Keras 3.6 builds the loss trackers, metrics and optimizer slots only under a tf.distribute
    # strategy before fit traces its step; without one it creates them while tracing, and TF then
    # traces the whole step a second time (half of a small model's first-epoch seconds). Under a
    # strategy it builds them from a batch it draws with an extra pass over the dataset (so each
    # epoch then sees the shuffle order of the next one, unlike a run without a strategy) and
    # averages with strategy.reduce, which MultiWorkerMirroredStrategy cannot do for a nested
    # batch; and under multi-worker it averages each step's scalar logs along an axis 0 they lack.
    # `_maybe_symbolic_build` builds from the dataset's element spec, with or without a strategy;
    # `_with_worker_axis` gives the logs that axis (tests/trainer/test_multi_worker.py trains two
    # workers and one process and compares them).
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            data_batch = iterator.data_adapter.get_tf_dataset().element_spec
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def test_step(self, data):
        return _with_worker_axis(super().test_step(data))

    def train_step(self, data):
        return _with_worker_axis(self._fgm_step(data) if self.fgm_epsilon
                                 else super().train_step(data))

    def _fgm_step(self, data):
        import tensorflow as tf
        from keras.src.trainers.data_adapters import data_adapter_utils

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights
        table = self.get_layer(EMBEDDING).tokens.embeddings
        at = next(i for i, w in enumerate(weights) if w is table)

        def gradients(track):
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                          training=True)
                if track:
                    self._loss_tracker.update_state(loss, sample_weight=tf.shape(x[TOKEN_IDS])[0])
                scaled = self.optimizer.scale_loss(loss)
            return y_pred, tape.gradient(scaled, weights)

        y_pred, clean = gradients(track=True)

        def with_adversarial():
            direction = tf.convert_to_tensor(clean[at])
            delta = self.fgm_epsilon * direction / (tf.norm(direction) + 1e-12)
            table.assign_add(delta)
            _, adversarial = gradients(track=False)
            table.assign_sub(delta)
            return [_summed(c, a) for c, a in zip(clean, adversarial)]

        if self.fgm_every == 1:
            update = with_adversarial()
        else:  # the step count before this update: steps 0, k, 2k, ... are perturbed
            update = tf.cond(self.optimizer.iterations % self.fgm_every == 0,
                             with_adversarial, lambda: clean)
        self.optimizer.apply_gradients(zip(update, weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _summed(a, b):
    """a + b as one tape of the two summed losses gives it: an embedding table's rows (one per
    token occurrence, tf.IndexedSlices) concatenated, so the optimizer treats them as in a plain
    step (Keras 3.6's Adam squares each row before rows of one token are added up)."""
    import tensorflow as tf

    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def _with_worker_axis(logs):
    """Each scalar log as a vector of one under multi-worker training (see MultiTaskModel)."""
    from mtmoe.trainer.distribution import in_multi_worker_mode

    if not in_multi_worker_mode():
        return logs
    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}


class ReplicaMeanAdamW(keras.optimizers.AdamW):
    """AdamW stepping with the mean of the replicas' gradients under tf.distribute.

    Keras 3.6 sums the replicas' gradients, each of its own replica's mean loss (Keras 2 divided
    each replica's loss by the replica count): without this the step grows with the replica count.
    """

    def scale_loss(self, loss):
        import tensorflow as tf

        return super().scale_loss(loss) / tf.distribute.get_strategy().num_replicas_in_sync


def feed_forward(config, block: int, task_names: List[str]) -> keras.layers.Layer:
    """The feed-forward layer of one block; a list-returning layer when its gates are per task."""
    m = config.model
    last = block == m.num_blocks - 1
    name = f"ffn_{block}"
    if m.trunk == "mmoe" and last:
        return MultiGateExperts(m.embedding_dim, m.ff_dim, m.num_experts, task_names, m.dropout,
                                name=name)
    if m.trunk == "deepseek_moe":
        return DeepSeekMoE(m.embedding_dim, m.expert_dim, m.shared_experts, m.routed_experts,
                           m.top_k, task_names if last else [SHARED_ROUTER], m.capacity_factor,
                           m.dense_dispatch, m.balance_alpha, m.dropout, name=name)
    return FeedForward(m.embedding_dim, m.ff_dim, m.dropout, name=name)


def recurrent_layer_name(index: int) -> str:
    """`recurrent`, `recurrent_2`, ...: the first keeps the name models saved before stacking had."""
    return RECURRENT if index == 0 else f"{RECURRENT}_{index + 1}"


def build_model(config, vocabulary_sizes: Dict[str, int], num_classes: Dict[str, int]
                ) -> keras.Model:
    """{token_ids [B, L], char_ids [B, L, C]} -> {task name: float32 output} for every task;
    L is any length up to `text.max_tokens`."""
    m, text = config.model, config.text
    task_names = [task.name for task in config.tasks]
    # Any length up to max_tokens: training batches are cut to their longest text.
    inputs = {TOKEN_IDS: keras.Input(shape=(None,), dtype="int32", name=TOKEN_IDS)}
    padding_mask = ops.not_equal(inputs[TOKEN_IDS], PAD_ID)
    x = TokenAndPositionEmbedding(vocabulary_sizes[TOKEN_IDS], text.max_tokens, m.embedding_dim,
                                  name=EMBEDDING)(inputs[TOKEN_IDS])
    if text.max_chars:
        inputs[CHAR_IDS] = keras.Input(shape=(None, text.max_chars), dtype="int32", name=CHAR_IDS)
        x = x + CharacterEncoder(vocabulary_sizes[CHAR_IDS], m.char_dim, m.embedding_dim,
                                 name=CHARACTERS)(inputs[CHAR_IDS])
    x = keras.layers.Dropout(m.dropout)(x)
    if m.recurrent:  # word order read token by token: what B-/I- tags depend on
        for layer in range(m.recurrent_layers):
            x = RecurrentEncoder(m.embedding_dim, m.dropout, m.recurrent_units,
                                 name=recurrent_layer_name(layer))(x, padding_mask)
    sequences = None
    for block in range(m.num_blocks):
        x = SelfAttention(m.embedding_dim, m.num_heads, m.dropout, name=f"attention_{block}")(
            x, padding_mask)
        out = feed_forward(config, block, task_names)(x, padding_mask)
        if isinstance(out, list) and block == m.num_blocks - 1:
            sequences = dict(zip(task_names, out))  # one gate per task: one sequence per task
        else:
            x = out[0] if isinstance(out, list) else out
    sequences = sequences or {name: x for name in task_names}
    final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
    pooling = MaskedMeanPooling(name="pooling")
    outputs, per_token = {}, {}
    # Sentence-level tasks first, so that token-tagging heads can read their predictions.
    for task in sorted(config.tasks, key=lambda t: task_type(t).per_token):
        sequence = final_norm(sequences[task.name])
        pooled = pooling(sequence, padding_mask)
        if m.token_level_classes and task.type == CLASSIFICATION:
            per_token[task.name] = token_level_classes(task, sequence, num_classes[task.name])
        if m.tags_see_classes and task_type(task).per_token:
            sequence = with_class_context(sequence, [per_token.get(t.name, outputs[t.name])
                                                     for t in config.tasks
                                                     if t.type == CLASSIFICATION])
        outputs[task.name] = head_of(task).head(task, sequence, pooled, num_classes[task.name], m)
    outputs = {task.name: outputs[task.name] for task in config.tasks}
    uncertain = config.training.loss_weighting == "uncertainty"
    weights = loss_weights(config)
    return MultiTaskModel(
        inputs=inputs, outputs={**outputs, **{token_level_output_name(t.name): per_token[t.name]
                                              for t in config.tasks if t.name in per_token}},
        name="mtmoe", fgm_epsilon=config.training.fgm_epsilon,
        fgm_every=config.training.fgm_every,
        uncertainty_tasks=task_names if uncertain else (),
        token_level_tasks={t.name: weights[t.name] for t in config.tasks if t.name in per_token},
        label_smoothing=config.training.label_smoothing)


def with_class_context(sequence, class_probabilities: list):
    """[B, L, d] -> [B, L, d + sum C]: every token also reads each classification task's predicted
    class probabilities, the text's [B, C] or its own token's [B, L, C] (Stack-Propagation feeds
    each token's predicted intent to its slot decoder). The gradient stops there: the tagging loss
    does not pull the classifiers."""
    if not class_probabilities:
        return sequence
    every_token = ops.ones_like(sequence[:, :, :1])  # [B, L, 1]
    context = [ops.stop_gradient(ops.cast(p, sequence.dtype)) for p in class_probabilities]
    context = [p if len(p.shape) == 3 else every_token * p[:, None, :] for p in context]
    return ops.concatenate([sequence] + context, axis=-1)


def loss_weights(config) -> Dict[str, float]:
    """The w_t the model is compiled with: the tasks' loss weights, or 1 when they are learned."""
    learned = config.training.loss_weighting == "uncertainty"
    return {task.name: 1.0 if learned else task.loss_weight for task in config.tasks}


def compile_model(model: keras.Model, config) -> keras.Model:
    """L = sum_t w_t L_t (+ the MoE balance losses), each L_t averaged over task t's labelled examples."""
    t = config.training
    optimizer = ReplicaMeanAdamW(
        learning_rate=t.learning_rate, weight_decay=t.weight_decay,
        gradient_accumulation_steps=t.gradient_accumulation_steps
        if t.gradient_accumulation_steps > 1 else None,
        use_ema=t.ema_momentum > 0, ema_momentum=t.ema_momentum or 0.99)
    optimizer.exclude_from_weight_decay(var_names=[LOG_VARIANCE])  # decay would pull w_t to 1
    model.compile(
        optimizer=optimizer,
        loss={task.name: task_loss(task, t, model) for task in config.tasks},
        loss_weights=loss_weights(config),
        metrics={task.name: head_of(task).keras_metrics() for task in config.tasks},
    )
    return model


def effective_loss_weights(model: keras.Model, config) -> Dict[str, float]:
    """The weight each task's loss has in training: learned, or as compiled."""
    if config.training.loss_weighting == "uncertainty":
        return model.learned_loss_weights()
    return loss_weights(config)


def moe_layers(model: keras.Model):
    """The gated feed-forward layers of a model, in block order."""
    return [layer for layer in model.layers if isinstance(layer, (DeepSeekMoE, MultiGateExperts))]
