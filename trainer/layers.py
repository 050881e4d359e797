"""Keras 3 layers of the shared trunk. Backend-neutral: only `keras.ops`.

A trunk is embeddings (optionally followed by a `RecurrentEncoder`), then blocks of `SelfAttention`
and a feed-forward layer. The feed-forward layer is `FeedForward` (dense trunk), `MultiGateExperts`
(MMoE) or `DeepSeekMoE`. The last feed-forward layer of the MoE trunks has one gate per task and
returns one sequence per task.
"""
import math

import keras
from keras import ops

from mtmoe.core.file_names import KERAS_PACKAGE


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class TokenAndPositionEmbedding(keras.layers.Layer):
    """`E_tok[ids] + E_pos[0..L)`: learned token and absolute-position embeddings.

    Args:
        vocabulary_size: rows of the token table (padding and OOV ids included).
        max_length: longest sequence.
        dim: embedding width.

    Example:
        >>> layer = TokenAndPositionEmbedding(100, 16, 8)
        >>> tuple(layer(ops.ones((2, 16), dtype="int32")).shape)
        (2, 16, 8)
    """

    def __init__(self, vocabulary_size, max_length, dim, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.max_length = max_length
        self.dim = dim
        self.tokens = keras.layers.Embedding(vocabulary_size, dim, name="tokens",
                                             dtype=self.dtype_policy)
        self.positions = keras.layers.Embedding(max_length, dim, name="positions",
                                                dtype=self.dtype_policy)

    def call(self, ids):
        positions = ops.arange(ops.shape(ids)[-1])
        return self.tokens(ids) + self.positions(positions)[None, :, :]

    def compute_output_shape(self, ids_shape):
        return (*ids_shape, self.dim)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "max_length": self.max_length, "dim": self.dim}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class RecurrentEncoder(keras.layers.Layer):
    """`x + Dropout(BiLSTM(LN(x)))`, padding masked: an order-aware sublayer (two LSTMs of `units`,
    one per direction, default dim / 2; concatenated, and projected back to `dim` when wider).

    Example:
        >>> tuple(RecurrentEncoder(16)(ops.zeros((2, 5, 16)), ops.ones((2, 5), dtype="bool")).shape)
        (2, 5, 16)
        >>> tuple(RecurrentEncoder(16, units=32)(ops.zeros((2, 5, 16)),
        ...                                      ops.ones((2, 5), dtype="bool")).shape)
        (2, 5, 16)
    """

    def __init__(self, dim, dropout=0.0, units=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.dropout, self.units = dim, dropout, units or dim // 2
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy)
        self.rnn = keras.layers.Bidirectional(
            keras.layers.LSTM(self.units, return_sequences=True, dtype=self.dtype_policy),
            merge_mode="concat", dtype=self.dtype_policy)
        self.projection = (keras.layers.Dense(dim, dtype=self.dtype_policy)
                           if 2 * self.units != dim else None)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, x_shape, padding_mask_shape=None):
        self.norm.build(x_shape)
        self.rnn.build(x_shape)
        if self.projection is not None:
            self.projection.build(tuple(x_shape[:-1]) + (2 * self.units,))

    def call(self, x, padding_mask, training=None):
        h = self.rnn(self.norm(x), mask=padding_mask, training=training)
        if self.projection is not None:
            h = self.projection(h)
        return x + self.drop(h, training=training) * ops.cast(padding_mask, x.dtype)[..., None]

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "dropout": self.dropout,
                "units": self.units}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class CharacterEncoder(keras.layers.Layer):
    """`max_c relu(Conv1D(E_char[chars]))` per token: a spelling signal for words the vocabulary lacks.

    Args:
        vocabulary_size: rows of the character table (id 0 pads).
        char_dim: character embedding width.
        dim: output width per token.
        kernel_size: characters seen by each filter.

    Example:
        >>> tuple(CharacterEncoder(50, 8, 16)(ops.ones((2, 5, 12), dtype="int32")).shape)
        (2, 5, 16)
    """

    def __init__(self, vocabulary_size, char_dim, dim, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.char_dim = vocabulary_size, char_dim
        self.dim, self.kernel_size = dim, kernel_size
        self.embedding = keras.layers.Embedding(vocabulary_size, char_dim, name="chars",
                                                dtype=self.dtype_policy)
        self.conv = keras.layers.Conv1D(dim, kernel_size, padding="same", activation="relu",
                                        dtype=self.dtype_policy)

    def call(self, char_ids):
        batch, length, chars = ops.shape(char_ids)[0], ops.shape(char_ids)[1], ops.shape(char_ids)[2]
        mask = ops.cast(ops.reshape(char_ids, (-1, chars, 1)) > 0, self.compute_dtype)
        # Padding characters embed as zeros, as the convolution's own padding does at a word's start:
        # a word's filters at its last characters read the same whatever pads it.
        x = self.embedding(ops.reshape(char_ids, (-1, chars))) * mask
        x = ops.max(self.conv(x) * mask, axis=1)  # relu >= 0, so masked positions never win
        return ops.reshape(x, (batch, length, self.dim))

    def compute_output_shape(self, char_ids_shape):
        return (*char_ids_shape[:-1], self.dim)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "char_dim": self.char_dim, "dim": self.dim, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class SelfAttention(keras.layers.Layer):
    """`x + Dropout(MHA(LN(x)))` with padding keys masked (pre-norm Transformer sublayer).

    Example:
        >>> tuple(SelfAttention(16, 2)(ops.zeros((2, 5, 16)), ops.ones((2, 5), dtype="bool")).shape)
        (2, 5, 16)
    """

    def __init__(self, dim, num_heads, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy)
        self.attention = keras.layers.MultiHeadAttention(num_heads, dim // num_heads, dropout=dropout,
                                                         dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def call(self, x, padding_mask, training=None):
        length = ops.shape(x)[1]
        keys = ops.broadcast_to(padding_mask[:, None, :], (ops.shape(x)[0], length, length))
        h = self.norm(x)
        return x + self.drop(self.attention(h, h, attention_mask=keys, training=training),
                             training=training)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class FeedForward(keras.layers.Layer):
    """`x + Dropout(W2 gelu(W1 LN(x)))`: the dense trunk's feed-forward sublayer.

    Example:
        >>> tuple(FeedForward(16, 32)(ops.zeros((2, 5, 16)), ops.ones((2, 5), dtype="bool")).shape)
        (2, 5, 16)
    """

    def __init__(self, dim, hidden_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden_dim, self.dropout = dim, hidden_dim, dropout
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy)
        self.inner = keras.layers.Dense(hidden_dim, activation="gelu", dtype=self.dtype_policy)
        self.outer = keras.layers.Dense(dim, dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def call(self, x, padding_mask=None, training=None):
        return x + self.drop(self.outer(self.inner(self.norm(x))), training=training)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden_dim": self.hidden_dim,
                "dropout": self.dropout}


class _Experts(keras.layers.Layer):
    """E feed-forward experts with stacked weights: `W2_e gelu(W1_e x + b1_e) + b2_e`."""

    def __init__(self, num_experts, dim, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.dim, self.hidden_dim = num_experts, dim, hidden_dim

    def build(self, input_shape=None):
        e, d, h = self.num_experts, self.dim, self.hidden_dim
        self.w1 = self.add_weight(shape=(e, d, h), initializer="glorot_uniform", name="w1")
        self.b1 = self.add_weight(shape=(e, 1, h), initializer="zeros", name="b1")
        self.w2 = self.add_weight(shape=(e, h, d), initializer="glorot_uniform", name="w2")
        self.b2 = self.add_weight(shape=(e, 1, d), initializer="zeros", name="b2")

    def call(self, x):
        """[E, C, d] -> [E, C, d]: expert e on its own C inputs."""
        hidden = keras.activations.gelu(ops.einsum("ecd,edh->ech", x, self.w1) + self.b1)
        return ops.einsum("ech,ehd->ecd", hidden, self.w2) + self.b2

    def all_experts(self, x):
        """[N, d] -> [N, E, d]: every expert on every input, as one batched matmul per weight on
        the input repeated per expert. An einsum of the input with the stacked weights rearranges
        the weights at every call, which at batch 1 took longer than the arithmetic (README
        Results, serving)."""
        repeated = ops.broadcast_to(x[None], (self.num_experts,) + tuple(ops.shape(x)))
        return ops.transpose(self.call(repeated), (1, 0, 2))

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "dim": self.dim,
                "hidden_dim": self.hidden_dim}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MultiGateExperts(keras.layers.Layer):
    """MMoE (Ma et al. 2018): `x + sum_e softmax(G_t LN(x))_e expert_e(LN(x))`, one gate G_t per task.

    Returns one sequence per gate, in `gate_names` order.

    Example:
        >>> outs = MultiGateExperts(16, 32, 4, ["a", "b"])(ops.zeros((2, 5, 16)),
        ...                                                 ops.ones((2, 5), dtype="bool"))
        >>> len(outs), tuple(outs[0].shape)
        (2, (2, 5, 16))
    """

    def __init__(self, dim, hidden_dim, num_experts, gate_names, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden_dim, self.num_experts = dim, hidden_dim, num_experts
        self.gate_names, self.dropout = list(gate_names), dropout
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy)
        self.experts = _Experts(num_experts, dim, hidden_dim, name="experts", dtype=self.dtype_policy)
        self.gates = [keras.layers.Dense(num_experts, name=f"gate_{n}", dtype=self.dtype_policy)
                      for n in self.gate_names]
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        # Every sublayer here, in the order a call uses them: with compute_output_shape defined, a
        # functional model never traces `call`, so nothing else would build them.
        self.experts.build()
        self.norm.build(input_shape)
        for gate in self.gates:
            gate.build(input_shape)

    def gate_probabilities(self, x):
        """{gate name: [B, L, E] softmax gate weights} of the normalized input."""
        h = self.norm(x)
        return {n: ops.softmax(ops.cast(g(h), "float32"), axis=-1)
                for n, g in zip(self.gate_names, self.gates)}

    def call(self, x, padding_mask=None, training=None):
        h = self.norm(x)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        experts = ops.reshape(self.experts.all_experts(ops.reshape(h, (-1, self.dim))),
                              (batch, length, self.num_experts, self.dim))
        outputs = []
        for gate in self.gates:
            weights = ops.cast(ops.softmax(ops.cast(gate(h), "float32"), axis=-1), x.dtype)
            mixed = ops.sum(experts * weights[..., None], axis=2)
            outputs.append(x + self.drop(mixed, training=training))
        return outputs

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return [x_shape] * len(self.gate_names)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden_dim": self.hidden_dim,
                "num_experts": self.num_experts, "gate_names": self.gate_names,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class DeepSeekMoE(keras.layers.Layer):
    """DeepSeekMoE feed-forward: `x + sum_j shared_j(h) + sum_i g_i routed_i(h)`, `h = LN(x)`.

    `s = softmax(h . c_i)` over learned expert centroids `c_i`; `g_i = s_i` for the `top_k` largest
    and 0 otherwise. Each router adds the balance loss `alpha * sum_i f_i P_i`, with
    `f_i = N_r / (K T) * #tokens routed to i` and `P_i` the mean of `s_i` over the T non-padding tokens.

    In training, with `dense_dispatch=False`, tokens go to experts through fixed-size buffers of
    `capacity = ceil(T * top_k / N_r * capacity_factor)` slots (GShard / Switch): routed compute follows
    top_k, not N_r; a token whose expert is full skips it and keeps the residual and shared path.
    `dense_dispatch=True`, and inference always, runs every expert on every token and weights the
    outputs by the top-k gates: no token loses an expert to a full buffer.

    Several `router_names` give one router per name over the same experts and one output each (the
    per-task gates of the last block); otherwise the single output is returned as a one-item list.

    Args:
        dim: model width.
        expert_dim: hidden width of each (fine-grained) expert.
        num_shared: K_s always-on experts.
        num_routed: N_r routed experts.
        top_k: experts per token.
        router_names: one router per name.
        capacity_factor: slack of the expert buffers.
        dense_dispatch: reference mode, see above.
        balance_alpha: weight of the balance loss.
        dropout: dropout on the feed-forward output.

    Example:
        >>> moe = DeepSeekMoE(16, 8, 1, 8, 2, ["shared"])
        >>> tuple(moe(ops.zeros((2, 5, 16)), ops.ones((2, 5), dtype="bool"))[0].shape)
        (2, 5, 16)
    """

    def __init__(self, dim, expert_dim, num_shared, num_routed, top_k, router_names,
                 capacity_factor=1.25, dense_dispatch=False, balance_alpha=0.01, dropout=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.dim, self.expert_dim = dim, expert_dim
        self.num_shared, self.num_routed, self.top_k = num_shared, num_routed, top_k
        self.router_names = list(router_names)
        self.capacity_factor, self.dense_dispatch = capacity_factor, dense_dispatch
        self.balance_alpha, self.dropout = balance_alpha, dropout
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy)
        # K_s experts of width h summed equal one feed-forward of width K_s * h.
        self.shared_in = keras.layers.Dense(max(num_shared, 1) * expert_dim, activation="gelu",
                                            name="shared_in", dtype=self.dtype_policy)
        self.shared_out = keras.layers.Dense(dim, name="shared_out", dtype=self.dtype_policy)
        self.routed = _Experts(num_routed, dim, expert_dim, name="routed", dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.routed.build()
        self.centroids = {n: self.add_weight(shape=(self.dim, self.num_routed), name=f"centroids_{n}",
                                             initializer="glorot_uniform")
                          for n in self.router_names}
        # The sublayers too (see MultiGateExperts.build), in the order a call uses them.
        self.norm.build(input_shape)
        if self.num_shared:
            self.shared_in.build(input_shape)
            self.shared_out.build((*input_shape[:-1], self.shared_in.units))

    def capacity(self, num_tokens: int) -> int:
        return int(math.ceil(num_tokens * self.top_k / self.num_routed * self.capacity_factor))

    def route(self, h, router):
        """[N, d] -> (affinities s [N, N_r] float32, top-k gates [N, k], top-k expert ids [N, k])."""
        scores = ops.softmax(ops.cast(ops.matmul(h, self.centroids[router]), "float32"), axis=-1)
        gates, experts = ops.top_k(scores, self.top_k)
        return scores, gates, experts

    def balance_loss(self, scores, experts, valid):
        """alpha * sum_i f_i P_i over valid tokens; valid: [N] float32."""
        tokens = ops.maximum(ops.sum(valid), 1.0)
        chosen = ops.sum(ops.one_hot(experts, self.num_routed), axis=1) * valid[:, None]
        f = ops.sum(chosen, axis=0) * self.num_routed / (self.top_k * tokens)
        p = ops.sum(scores * valid[:, None], axis=0) / tokens
        return self.balance_alpha * ops.sum(f * p)

    def _combine_dense(self, every_expert, gates, experts, valid):
        """[N, N_r, d] outputs of every expert -> [N, d]: each token's top-k, gate-weighted."""
        weights = ops.sum(ops.one_hot(experts, self.num_routed) * gates[..., None], axis=1)
        weights = ops.cast(weights * valid[:, None], every_expert.dtype)
        return ops.sum(every_expert * weights[..., None], axis=1)

    def _dispatch_capacity(self, h, gates, experts, valid):
        n = ops.shape(h)[0]
        capacity = self.capacity(h.shape[0]) if h.shape[0] is not None else None
        if capacity is None:  # symbolic batch: size the buffers at run time
            capacity = ops.cast(ops.ceil(ops.cast(n * self.top_k, "float32") / self.num_routed
                                         * self.capacity_factor), "int32")
        # Choice-major order: every token's first choice claims a slot before any second choice.
        expert_ids = ops.reshape(ops.transpose(experts), (-1,))
        token_ids = ops.tile(ops.arange(n), (self.top_k,))
        choice_gates = ops.reshape(ops.transpose(gates), (-1,))
        choice_valid = ops.tile(valid, (self.top_k,))
        one_hot = ops.one_hot(expert_ids, self.num_routed) * choice_valid[:, None]
        position = ops.cast(ops.sum(ops.cumsum(one_hot, axis=0) * one_hot, axis=-1), "int32") - 1
        kept = ops.logical_and(position >= 0, position < capacity)
        dump = self.num_routed * capacity
        slot = ops.where(kept, ops.cast(expert_ids, "int32") * capacity + position, dump)
        buffers = ops.scatter(slot[:, None], ops.take(h, token_ids, axis=0), (dump + 1, self.dim))
        buffers = ops.reshape(buffers[:dump], (self.num_routed, capacity, self.dim))
        results = ops.reshape(self.routed(buffers), (dump, self.dim))
        results = ops.concatenate([results, ops.zeros((1, self.dim), results.dtype)], axis=0)
        weights = ops.cast(choice_gates * ops.cast(kept, "float32"), h.dtype)
        per_choice = ops.take(results, slot, axis=0) * weights[:, None]
        return ops.sum(ops.reshape(per_choice, (self.top_k, n, self.dim)), axis=0)

    def call(self, x, padding_mask, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        h = ops.reshape(self.norm(x), (-1, self.dim))
        valid = ops.cast(ops.reshape(padding_mask, (-1,)), "float32")
        common = self.shared_out(self.shared_in(h)) if self.num_shared else ops.zeros_like(h)
        # Buffers only while training: at inference every token gets its top-k experts, so a
        # text's prediction never depends on the other texts in its batch. Every expert then runs
        # once on every token, and each router weighs the same outputs.
        buffered = training and not self.dense_dispatch
        every_expert = None if buffered else self.routed.all_experts(h)
        outputs = []
        for router in self.router_names:
            scores, gates, experts = self.route(h, router)
            self.add_loss(self.balance_loss(scores, experts, valid))
            routed = (self._dispatch_capacity(h, gates, experts, valid) if buffered
                      else self._combine_dense(every_expert, gates, experts, valid))
            ffn = ops.reshape(common + routed, (batch, length, self.dim))
            outputs.append(x + self.drop(ffn, training=training))
        return outputs

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return [x_shape] * len(self.router_names)

    def gate_probabilities(self, x):
        """{router name: [B, L, N_r] affinities s} of the normalized input."""
        h = self.norm(x)
        return {n: ops.softmax(ops.cast(ops.matmul(h, self.centroids[n]), "float32"), axis=-1)
                for n in self.router_names}

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "expert_dim": self.expert_dim,
                "num_shared": self.num_shared, "num_routed": self.num_routed, "top_k": self.top_k,
                "router_names": self.router_names, "capacity_factor": self.capacity_factor,
                "dense_dispatch": self.dense_dispatch, "balance_alpha": self.balance_alpha,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=KERAS_PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """`sum_t m_t x_t / sum_t m_t`: the mean of the non-padding positions.

    Example:
        >>> tuple(MaskedMeanPooling()(ops.ones((2, 5, 4)), ops.ones((2, 5), dtype="bool")).shape)
        (2, 4)
    """

    def call(self, x, mask):
        weights = ops.cast(mask, x.dtype)[:, :, None]
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, x_shape, mask_shape=None):
        return (x_shape[0], x_shape[-1])
