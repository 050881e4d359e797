"""The multi-task Keras 3 model: shared token encoder, one named head per task."""
from typing import Dict

import keras
from keras import ops

from mtmoe.feature_names import PAD_ID, TOKEN_IDS
from mtmoe.tasks import task_type


class TokenAndPositionEmbedding(keras.layers.Layer):
    """`E_tok[ids] + E_pos[0..L)`: learned token and absolute-position embeddings.

    Args:
        vocabulary_size: rows of the token table (padding and OOV ids included).
        max_length: longest sequence.
        dim: embedding width.

    Example:
        >>> layer = TokenAndPositionEmbedding(100, 16, 8)
        >>> layer(ops.ones((2, 16), dtype="int32")).shape  # (2, 16, 8)
    """

    def __init__(self, vocabulary_size, max_length, dim, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.max_length = max_length
        self.dim = dim
        self.tokens = keras.layers.Embedding(vocabulary_size, dim, name="tokens")
        self.positions = keras.layers.Embedding(max_length, dim, name="positions")

    def call(self, ids):
        positions = ops.arange(ops.shape(ids)[-1])
        return self.tokens(ids) + self.positions(positions)[None, :, :]

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "max_length": self.max_length, "dim": self.dim}


class EncoderBlock(keras.layers.Layer):
    """Pre-norm Transformer block: `x + Attn(LN(x))`, then `x + FFN(LN(x))`; padding keys masked.

    Args:
        dim: model width.
        num_heads: attention heads.
        ff_dim: hidden width of the feed-forward block.
        dropout: dropout rate after attention and feed-forward.

    Example:
        >>> block = EncoderBlock(16, 2, 32)
        >>> block(ops.zeros((2, 5, 16)), ops.ones((2, 5), dtype="bool")).shape  # (2, 5, 16)
    """

    def __init__(self, dim, num_heads, ff_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.ff_dim, self.dropout = dim, num_heads, ff_dim, dropout
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention = keras.layers.MultiHeadAttention(num_heads, dim // num_heads, dropout=dropout)
        self.ff_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.ff_in = keras.layers.Dense(ff_dim, activation="gelu")
        self.ff_out = keras.layers.Dense(dim)
        self.drop = keras.layers.Dropout(dropout)

    def call(self, x, padding_mask, training=None):
        keys = ops.broadcast_to(padding_mask[:, None, :], (ops.shape(x)[0], ops.shape(x)[1],
                                                           ops.shape(x)[1]))
        h = self.attention_norm(x)
        x = x + self.drop(self.attention(h, h, attention_mask=keys, training=training),
                          training=training)
        h = self.ff_out(self.ff_in(self.ff_norm(x)))
        return x + self.drop(h, training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout}


class MaskedMeanPooling(keras.layers.Layer):
    """`sum_t m_t x_t / sum_t m_t`: the mean of the non-padding positions.

    Example:
        >>> MaskedMeanPooling()(ops.ones((2, 5, 4)), ops.ones((2, 5), dtype="bool")).shape  # (2, 4)
    """

    def call(self, x, mask):
        weights = ops.cast(mask, x.dtype)[:, :, None]
        return ops.sum(x * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


def build_model(config, vocabulary_size: int, num_classes: Dict[str, int]) -> keras.Model:
    """Token ids [B, L] -> {task name: float32 output} for every task of the config."""
    m = config.model
    token_ids = keras.Input(shape=(config.text.max_tokens,), dtype="int32", name=TOKEN_IDS)
    padding_mask = ops.not_equal(token_ids, PAD_ID)
    x = TokenAndPositionEmbedding(vocabulary_size, config.text.max_tokens, m.embedding_dim,
                                  name="embedding")(token_ids)
    x = keras.layers.Dropout(m.dropout)(x)
    for i in range(m.num_blocks):
        x = EncoderBlock(m.embedding_dim, m.num_heads, m.ff_dim, m.dropout, name=f"encoder_{i}")(
            x, padding_mask)
    sequence = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    pooled = MaskedMeanPooling(name="pooling")(sequence, padding_mask)
    outputs = {task.name: task_type(task).head(task, sequence, pooled, num_classes[task.name])
               for task in config.tasks}
    return keras.Model(inputs={TOKEN_IDS: token_ids}, outputs=outputs, name="mtmoe")


def compile_model(model: keras.Model, config) -> keras.Model:
    """L = sum_t w_t L_t, each L_t averaged over the examples labelled for task t."""
    types = {task.name: task_type(task) for task in config.tasks}
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=config.training.learning_rate),
        loss={name: t.loss() for name, t in types.items()},
        loss_weights={task.name: task.loss_weight for task in config.tasks},
        metrics={name: t.keras_metrics() for name, t in types.items()},
    )
    return model
