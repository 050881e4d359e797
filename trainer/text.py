"""How raw text becomes tokens: one tokenizer for Transform, the Trainer's features and the serving
signatures, so that a text is split the same way at training and at serving.

Tokens are whitespace-separated words (tensorflow-text's WhitespaceTokenizer, an op that tensorflow-text
2.12.1 has, so the stock TF Serving image can load the graph). A token's vocabulary key is its case-folded
form without leading or trailing punctuation, so "Balance?" and "balance" share an id while the raw
token stays aligned with its tag.
"""
import tensorflow as tf
import tensorflow_text as tf_text


def vocabulary_key(tokens: tf.RaggedTensor) -> tf.RaggedTensor:
    folded = tf.ragged.map_flat_values(tf_text.case_fold_utf8, tokens)
    stripped = tf.ragged.map_flat_values(
        tf.strings.regex_replace, folded, r"^[[:punct:]]+|[[:punct:]]+$", "")
    return tf.ragged.map_flat_values(lambda s, f: tf.where(s == "", f, s), stripped, folded)


# Python's str.split() whitespace, which the converters split on: tensorflow-text's tokenizer splits
# at a multi-byte space (U+00A0, U+3000, ...) but leaves its first bytes on the previous token.
_WHITESPACE = r"[\p{Z}\t\n\v\f\r\x{1c}-\x{1f}\x{85}]+"


def tokenize(text: tf.Tensor) -> tf.RaggedTensor:
    """[B] or [B, 1] strings -> [B, None] whitespace tokens, as str.split() gives them."""
    spaced = tf.strings.regex_replace(tf.reshape(text, [-1]), _WHITESPACE, " ")
    return tf_text.WhitespaceTokenizer().tokenize(spaced)
