"""Plain Keras 3 baseline for SNIPS: word embedding + character CNN -> BiLSTM -> slot tags and intent.

    python bench/baseline_bilstm.py [--data ../shared/data/snips] [--epochs 30] [--patience 5]
                                    [--seed 42] [--threads 0]

The script a new user would write, made as fast as it goes (tf.data's autotuner off, the character
CNN run over every token at once): vocabularies from the train split (lowercased; id 0 padding,
id 1 OOV), words seen once in train replaced by OOV with probability 0.5 during training, batches of
64 padded to their own longest sentence, padding masked in the loss. After each epoch the dev split is
scored (slot span F1 + intent accuracy); the best epoch's weights are kept, training stops after
`patience` epochs without improvement, and the test split is scored with the best weights. Prints one
JSON line: test slot F1 (conlleval), intent accuracy, overall (sentence) accuracy, best epoch,
training seconds per epoch (dev scoring excluded) and the parameter count.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "0"

import argparse
import collections
import json
import sys
import time

import numpy as np
import tensorflow as tf
import keras
from keras import layers

from mtmoe.core.metrics import span_f1

PAD, OOV, MAX_CHARS, BATCH = 0, 1, 16, 64
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "snips")


def read_split(folder):
    """[(tokens, tags, intent)] of one SLU split folder."""
    lines = {name: open(os.path.join(folder, name), encoding="utf-8").read().splitlines()
             for name in ("seq.in", "seq.out", "label")}
    return [(words.split(), tags.split(), intent.strip())
            for words, tags, intent in zip(lines["seq.in"], lines["seq.out"], lines["label"])]


def index(items, reserved=()):
    return {item: i for i, item in enumerate(list(reserved) + sorted(set(items) - set(reserved)))}


def make_dataset(examples, words, chars, tags, intents, singletons=None):
    """A tf.data dataset of ({"words", "chars"}, {"slots", "intent"}, sample weights), one example each."""
    word_ids, char_ids, tag_ids = [], [], []
    for tokens, slot_tags, _ in examples:
        for token, tag in zip(tokens, slot_tags):
            word_ids.append(words.get(token.lower(), OOV))
            ids = [chars.get(c, OOV) for c in token.lower()[:MAX_CHARS]]
            char_ids.append(ids + [PAD] * (MAX_CHARS - len(ids)))
            tag_ids.append(tags.get(tag, tags["O"]))
    lengths = [len(tokens) for tokens, _, _ in examples]
    ragged = lambda values: tf.RaggedTensor.from_row_lengths(np.array(values, np.int32), lengths)
    dataset = tf.data.Dataset.from_tensor_slices((
        {"words": ragged(word_ids), "chars": ragged(char_ids)},
        {"slots": ragged(tag_ids), "intent": np.array([intents[i] for _, _, i in examples], np.int32)}))

    def prepare(x, y):
        if singletons is not None:  # word dropout, drawn anew for every example in every epoch
            drop = tf.gather(singletons, x["words"]) & (tf.random.uniform(tf.shape(x["words"])) < 0.5)
            x = {"words": tf.where(drop, OOV, x["words"]), "chars": x["chars"]}
        return x, y, {"slots": tf.ones_like(y["slots"], tf.float32), "intent": 1.0}

    if singletons is not None:
        dataset = dataset.shuffle(len(examples), reshuffle_each_iteration=True)
    # tf.data's autotuner off: with it on, an epoch's end can wait for its next wake-up (10.2,
    # 20.5, 41.0 s after the iterator starts), as the Trainer's input once did (trainer/module.py).
    options = tf.data.Options()
    options.autotune.enabled = False
    return (dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).padded_batch(BATCH)
            .prefetch(2).with_options(options))


class TokenCharCNN(layers.Layer):
    """Each token's characters -> max over a Conv1D's outputs, run on (texts x tokens, characters)
    at once: `TimeDistributed` runs a vectorized map over the time steps, several times slower."""

    def __init__(self, n_chars, **kwargs):
        super().__init__(**kwargs)
        self.embedding = layers.Embedding(n_chars, 32)
        self.conv = layers.Conv1D(64, 3, activation="relu")

    def call(self, chars):
        batch, time = keras.ops.shape(chars)[0], keras.ops.shape(chars)[1]
        x = self.conv(self.embedding(keras.ops.reshape(chars, (-1, MAX_CHARS))))
        return keras.ops.reshape(keras.ops.max(x, axis=1), (batch, time, 64))


def build_model(n_words, n_chars, n_tags, n_intents):
    words = keras.Input((None,), dtype="int32", name="words")
    chars = keras.Input((None, MAX_CHARS), dtype="int32", name="chars")
    mask = keras.ops.not_equal(words, PAD)                                  # padding, for LSTM and pool
    word_vectors = layers.Embedding(n_words, 100)(words)
    features = layers.Concatenate()([word_vectors, TokenCharCNN(n_chars)(chars)])
    states = layers.Bidirectional(layers.LSTM(128, return_sequences=True))(features, mask=mask)
    slots = layers.Dense(n_tags, activation="softmax", name="slots")(states)
    intent = layers.Dense(n_intents, activation="softmax", name="intent")(
        layers.GlobalAveragePooling1D()(states, mask=mask))                 # masked mean over tokens
    model = keras.Model({"words": words, "chars": chars}, {"slots": slots, "intent": intent})
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={"slots": "sparse_categorical_crossentropy",
                        "intent": "sparse_categorical_crossentropy"})
    return model


def score(model, dataset, examples, tag_names, intent_names):
    """Slot span F1 (conlleval), intent accuracy and overall accuracy of `model` on one split."""
    predicted_tags, predicted_intents = [], []
    for x, _, _ in dataset:
        out = model.predict_on_batch(x)
        lengths = np.sum(x["words"].numpy() != PAD, axis=1)
        predicted_tags += [[tag_names[t] for t in row[:n]]
                           for row, n in zip(out["slots"].argmax(-1), lengths)]
        predicted_intents += [intent_names[i] for i in out["intent"].argmax(-1)]
    gold_tags = [tags for _, tags, _ in examples]
    intent_right = [p == intent for p, (_, _, intent) in zip(predicted_intents, examples)]
    return {"slot_f1": span_f1(gold_tags, predicted_tags)["f1"],
            "intent_accuracy": float(np.mean(intent_right)),
            "overall_accuracy": float(np.mean([right and p == g for right, p, g
                                               in zip(intent_right, predicted_tags, gold_tags)]))}


def run(data_dir, epochs=30, patience=5, seed=42, threads=0, baton=None):
    """`baton` (bench/baton.py): each epoch, training and dev scoring, waits for its turn."""
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(seed)
    train, dev, test = (read_split(os.path.join(data_dir, split)) for split in ("train", "dev", "test"))
    counts = collections.Counter(token.lower() for tokens, _, _ in train for token in tokens)
    words = index(counts, reserved=("<pad>", "<oov>"))
    chars = index((c for word in counts for c in word), reserved=("<pad>", "<oov>"))
    tags = index(tag for _, slot_tags, _ in train for tag in slot_tags)
    intents = index(intent for _, _, intent in train)
    singletons = tf.constant([counts.get(word) == 1 for word in words])
    tag_names, intent_names = sorted(tags, key=tags.get), sorted(intents, key=intents.get)

    train_data = make_dataset(train, words, chars, tags, intents, singletons)
    dev_data, test_data = (make_dataset(split, words, chars, tags, intents) for split in (dev, test))
    model = build_model(len(words), len(chars), len(tags), len(intents))

    best, best_epoch, best_weights, epoch_seconds = -1.0, 0, None, []
    for epoch in range(1, epochs + 1):
        if baton:
            baton.take()
        start = time.perf_counter()
        model.fit(train_data, epochs=1, verbose=0)
        epoch_seconds.append(round(time.perf_counter() - start, 2))
        dev_scores = score(model, dev_data, dev, tag_names, intent_names)
        if baton:
            baton.give()
        objective = dev_scores["slot_f1"] + dev_scores["intent_accuracy"]
        print(f"epoch {epoch}: {epoch_seconds[-1]} s, dev {json.dumps(dev_scores)}", file=sys.stderr)
        if objective > best:
            best, best_epoch, best_weights, best_dev = objective, epoch, model.get_weights(), dev_scores
        elif epoch - best_epoch >= patience:
            break
    if baton:
        baton.finish()
    model.set_weights(best_weights)
    return {**score(model, test_data, test, tag_names, intent_names), "best_epoch": best_epoch,
            "epoch_seconds": epoch_seconds, "parameters": model.count_params(), "dev": best_dev}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.normpath(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--baton", metavar="FILE:MINE:OTHER",
                        help="take turns, an epoch at a time, with another training (bench/baton.py)")
    args = parser.parse_args()
    baton = None
    if args.baton:
        from baton import Baton
        baton = Baton(args.baton)
    print(json.dumps(run(args.data, args.epochs, args.patience, args.seed, args.threads, baton)))
