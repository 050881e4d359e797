"""Model inputs from the Transform output: batches cut to their longest text, word dropout of the
tokens seen once in training."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from mtmoe.core.config import TaskConfig
from mtmoe.core.feature_names import CHAR_IDS, FREQUENT_TOKEN_VOCABULARY, TOKEN_IDS, TOKEN_VOCABULARY
from mtmoe.trainer.features import drop_rare_words, rare_token_ids, trim_to_longest, vocabularies
from mtmoe.trainer.text import tokenize, vocabulary_key


@pytest.mark.slow
def test_rare_ids_are_the_tokens_seen_once_in_training(tiny_transform):
    _, tft_output, _, rows = tiny_transform
    keys = vocabulary_key(tokenize(tf.constant([row["text"] for row in rows])))
    counts = collections.Counter(k.decode() for k in keys.flat_values.numpy())
    vocabulary = [v.decode() for v in tft_output.vocabulary_by_name(TOKEN_VOCABULARY)]
    frequent = [v.decode() for v in tft_output.vocabulary_by_name(FREQUENT_TOKEN_VOCABULARY)]
    assert set(frequent) == {key for key, count in counts.items() if count >= 2}
    first, last = rare_token_ids(tft_output)
    # ids: 0 padding, 1.. the vocabulary by frequency, last + 1 out of vocabulary
    assert vocabulary[:first - 1] == frequent and last == len(vocabulary)
    assert all(counts[key] == 1 for key in vocabulary[first - 1:])


def test_word_dropout_replaces_only_rare_tokens_by_the_oov_id_and_keeps_their_characters():
    ids = np.tile(np.arange(0, 10, dtype="int64"), (2000, 1))  # 0 pads, rare ids are 6..8
    chars = np.ones((2000, 10, 3), "int64")
    dropped = drop_rare_words({TOKEN_IDS: ids, CHAR_IDS: chars}, (6, 8), 0.3, seed=(1, 2))
    out = dropped[TOKEN_IDS].numpy()
    np.testing.assert_array_equal(out[:, :6], ids[:, :6])  # padding and frequent tokens
    np.testing.assert_array_equal(out[:, 9], ids[:, 9])  # already out of vocabulary
    assert set(np.unique(out[:, 6:9])) == {6, 7, 8, 9}
    assert np.mean(out[:, 6:9] == 9) == pytest.approx(0.3, abs=0.03)
    np.testing.assert_array_equal(dropped[CHAR_IDS], chars)


def test_a_batch_is_cut_to_its_longest_text_and_only_token_targets_follow():
    ids = np.zeros((3, 8), "int64")
    ids[0, :2], ids[1, :5], ids[2, :1] = 4, 5, 6
    inputs = {TOKEN_IDS: ids, CHAR_IDS: np.ones((3, 8, 2), "int64")}
    targets = {"intent": np.array([1, 2, 0]), "slots": np.full((3, 8), -1)}
    tasks = [TaskConfig("intent", "classification", "intent"),
             TaskConfig("slots", "token_tagging", "slots")]
    cut_inputs, cut_targets = trim_to_longest(inputs, targets, tasks)
    assert cut_inputs[TOKEN_IDS].shape == (3, 5) and cut_inputs[CHAR_IDS].shape == (3, 5, 2)
    assert cut_targets["slots"].shape == (3, 5)
    np.testing.assert_array_equal(cut_targets["intent"], [1, 2, 0])
    empty = trim_to_longest({TOKEN_IDS: np.zeros((2, 8), "int64")}, {}, [])[0]
    assert empty[TOKEN_IDS].shape == (2, 1)  # an all-empty batch keeps one (padding) position


class RowsInOrder:
    """A data accessor whose datasets are the given transformed rows, batched, in their order."""

    def __init__(self, rows):
        self.rows = rows

    def tf_dataset_factory(self, file_pattern, options, schema):
        return tf.data.Dataset.from_tensor_slices(self.rows).batch(options.batch_size)


@pytest.mark.slow
def test_word_dropout_repeats_with_the_seed_and_changes_every_epoch(tiny_transform):
    """The training batches are a function of training.seed: the same in every pass over the data
    (a stateful random op in the parallel map made them depend on thread timing), new each epoch."""
    import keras

    from mtmoe.core.config import Config
    from mtmoe.trainer.module import make_dataset

    config, tft_output, transformed, _ = tiny_transform
    raw = config.to_dict()
    raw["training"].update(word_dropout=0.5, batch_size=2)
    config = Config.from_dict(raw)
    num_classes = {name: len(v) for name, v in vocabularies(tft_output, config).items()}

    accessor = RowsInOrder(transformed)  # one order of batches: what changes is word dropout

    def two_epochs():
        keras.utils.set_random_seed(config.training.seed)
        dataset = make_dataset([], accessor, tft_output, config, num_classes, shuffle=True)
        return [[batch[0][TOKEN_IDS].numpy() for batch in dataset] for _ in range(2)]

    first = two_epochs()
    oov = rare_token_ids(tft_output)[1] + 1
    assert any((batch == oov).any() for batch in first[0])  # some rare token was dropped
    for other in (two_epochs() for _ in range(5)):
        for epoch in range(2):
            assert len(other[epoch]) == len(first[epoch]) == 32
            for a, b in zip(first[epoch], other[epoch]):
                np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(*first))  # new draws in epoch 2


@pytest.mark.slow
def test_training_and_eval_input_run_without_tf_data_autotuning(tiny_transform):
    """With tf.data's autotuning on, 3 of 5 SNIPS training epochs of about 25 s ended at 41 s, 15 s
    after their last batch: both datasets the Trainer iterates turn it off."""
    from mtmoe.trainer.module import make_dataset

    config, tft_output, transformed, _ = tiny_transform
    num_classes = {name: len(v) for name, v in vocabularies(tft_output, config).items()}
    for shuffle in (True, False):
        dataset = make_dataset([], RowsInOrder(transformed), tft_output, config, num_classes,
                               shuffle=shuffle)
        assert dataset.options().autotune.enabled is False
        assert next(iter(dataset))[0][TOKEN_IDS].shape[0] > 0  # still yields batches


def test_length_bucketing_batches_each_text_once_among_texts_of_its_length():
    from mtmoe.trainer.module import by_length

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 200)
    ids = np.zeros((200, 32), "int64")
    for row, n in enumerate(lengths):
        ids[row, :n] = row + 1  # every token of a text is its row number + 1
    pools = tf.data.Dataset.from_tensor_slices(({TOKEN_IDS: ids}, {"intent": np.arange(200)})).batch(64)

    dataset = by_length(pools, 10, seed=3)

    def epoch(dataset=dataset):
        return [(inputs[TOKEN_IDS].numpy(), targets["intent"].numpy())
                for inputs, targets in dataset]

    batches = epoch()
    texts = np.concatenate([labels for _, labels in batches])
    assert sorted(texts) == list(range(200))  # every text once, with its own label
    for tokens, labels in batches:
        np.testing.assert_array_equal(tokens[:, 0], labels + 1)
    padded = sum(len(labels) * lengths[labels].max() for _, labels in batches)
    unsorted = sum(len(lengths[i:i + 10]) * lengths[i:i + 10].max() for i in range(0, 200, 10))
    assert padded < 1.2 * lengths.sum() < 0.8 * unsorted
    # A pool of 64 makes six batches of 10 and one of 4; the last pool, one of 8.
    assert sorted(len(labels) for _, labels in batches) == [4, 4, 4, 8] + [10] * 18
    order = [labels.tolist() for _, labels in batches]
    assert [labels.tolist() for _, labels in epoch()] != order  # the next epoch: reshuffled
    assert [labels.tolist() for _, labels in epoch(by_length(pools, 10, seed=3))] == order  # seeded


@pytest.mark.slow
def test_with_length_bucketing_the_training_input_keeps_every_text_and_its_word_dropout(
        tiny_transform):
    from mtmoe.core.config import Config
    from mtmoe.trainer.module import make_dataset

    config, tft_output, transformed, _ = tiny_transform
    raw = config.to_dict()
    raw["training"].update(length_bucketing=True, word_dropout=0.5, batch_size=4)
    config = Config.from_dict(raw)
    num_classes = {name: len(v) for name, v in vocabularies(tft_output, config).items()}
    dataset = make_dataset([], RowsInOrder(transformed), tft_output, config, num_classes,
                           shuffle=True)
    batches = list(dataset)
    assert sum(int(inputs[TOKEN_IDS].shape[0]) for inputs, _ in batches) == len(
        transformed[TOKEN_IDS])
    oov = rare_token_ids(tft_output)[1] + 1
    assert any((inputs[TOKEN_IDS].numpy() == oov).any() for inputs, _ in batches)
