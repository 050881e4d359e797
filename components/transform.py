"""TFX Transform module: raw tf.Examples -> token ids and per-task label ids.

Tokens are whitespace-separated words (tensorflow-text's WhitespaceTokenizer, an op that tensorflow-text
2.12.1 has, so the stock TF Serving image can load the graph). A token's vocabulary key is its case-folded
form without leading or trailing punctuation, so "Balance?" and "balance" share an id while the raw
token stays aligned with its tag. Ids: 0 = padding, 1.. = vocabulary, last = out-of-vocabulary.

Outputs: `token_ids` int64 [B, max_tokens], `char_ids` int64 [B, max_tokens, max_chars] (characters
of each vocabulary key, so that unseen words are not blind), `tokens` string [B, max_tokens] (raw
tokens, '' padded, so serving can return them next to per-token tags) and `<task>_label` per task.
Each output depends on the text alone or on one label field alone, so serving can transform raw text.
"""
import tensorflow as tf
import tensorflow_text as tf_text
import tensorflow_transform as tft

from mtmoe.config import Config
from mtmoe.feature_names import CHAR_IDS, PAD_ID, TEXT, TOKEN_IDS, TOKENS
from mtmoe.tasks import label_key, task_type

TOKEN_VOCABULARY = "tokens"
CHAR_VOCABULARY = "chars"
# The tokens seen at least twice in training: a prefix of the token vocabulary (both are sorted by
# frequency), so its size tells the Trainer which ids are rare (for word dropout).
FREQUENT_TOKEN_VOCABULARY = "frequent_tokens"


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


def preprocessing_fn(inputs, custom_config):
    config = Config.from_dict(custom_config["config"])
    max_tokens = config.text.max_tokens
    tokens = tokenize(inputs[TEXT])
    keys = vocabulary_key(tokens)
    ids = tft.compute_and_apply_vocabulary(
        keys, top_k=config.text.vocab_size, num_oov_buckets=1, vocab_filename=TOKEN_VOCABULARY)
    tft.vocabulary(keys, top_k=config.text.vocab_size, frequency_threshold=2,
                   vocab_filename=FREQUENT_TOKEN_VOCABULARY)
    outputs = {
        TOKEN_IDS: (ids + 1).to_tensor(default_value=PAD_ID, shape=[None, max_tokens]),
        TOKENS: tokens.to_tensor(default_value="", shape=[None, max_tokens]),
    }
    if config.text.max_chars:
        chars = tf.strings.unicode_split(keys, "UTF-8")
        char_ids = tft.compute_and_apply_vocabulary(chars, num_oov_buckets=1,
                                                    vocab_filename=CHAR_VOCABULARY)
        outputs[CHAR_IDS] = (char_ids + 1).to_tensor(
            default_value=PAD_ID, shape=[None, max_tokens, config.text.max_chars])
    for task in config.tasks:
        outputs[label_key(task)] = task_type(task).transform(
            task, inputs[task.label_field], tft, config.text)
    return outputs
