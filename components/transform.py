"""TFX Transform module: raw tf.Examples -> token ids and per-task label ids.

Tokens and their vocabulary keys come from mtmoe.trainer.text, which the serving signatures share.
Ids: 0 = padding, 1.. = vocabulary, last = out-of-vocabulary.

Outputs: `token_ids` int64 [B, max_tokens], `char_ids` int64 [B, max_tokens, max_chars] (characters
of each vocabulary key, so that unseen words are not blind), `tokens` string [B, max_tokens] (raw
tokens, '' padded, so serving can return them next to per-token tags) and `<task>_label` per task.
Each output depends on the text alone or on one label field alone, so serving can transform raw text.
"""
import tensorflow as tf
import tensorflow_transform as tft

from mtmoe.core.config import Config
from mtmoe.core.feature_names import (CHAR_IDS, CHAR_VOCABULARY, FREQUENT_TOKEN_VOCABULARY, PAD_ID, TEXT,
                                      TOKEN_IDS, TOKEN_VOCABULARY, TOKENS)
from mtmoe.core.tasks import label_key
from mtmoe.trainer.heads import head_of
from mtmoe.trainer.text import tokenize, vocabulary_key


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
        outputs[label_key(task)] = head_of(task).transform(
            task, inputs[task.label_field], tft, config.text)
    return outputs
