"""preprocessing_fn run with tft_beam on a few examples: ids, padding, tag alignment, label ids."""
import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from mtmoe.components.transform import preprocessing_fn
from mtmoe.core.config import Config
from mtmoe.trainer.text import tokenize

CONFIG = Config.from_dict({
    "tasks": [
        {"name": "intent", "type": "classification", "label_field": "intent",
         "out_of_scope_label": "oos"},
        {"name": "slots", "type": "token_tagging", "label_field": "slots"},
        {"name": "signals", "type": "multilabel", "label_field": "signals", "max_labels": 3},
    ],
    "text": {"max_tokens": 5, "vocab_size": 100},
})
TRAIN = [
    {"text": [b"Pay $50 to Bob."], "intent": [b"pay"], "slots": [b"O", b"B-amount", b"O", b"B-payee"],
     "signals": [b"urgent", b"polite"]},
    {"text": [b"pay bob now please thanks !"], "intent": [b"pay"],
     "slots": [b"O", b"B-payee", b"O", b"O", b"O", b"O"], "signals": []},
    {"text": [b"balance ?"], "intent": [b"balance"], "slots": [], "signals": [b"polite"]},
    {"text": [b"bob ?"], "intent": [b"oos"], "slots": [], "signals": []},
]


def _transform(rows, temp_dir):
    spec = {"text": tf.io.FixedLenFeature([1], tf.string)}
    spec.update({t.label_field: tf.io.VarLenFeature(tf.string) for t in CONFIG.tasks})
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    fn = functools.partial(preprocessing_fn, custom_config={"config": CONFIG.to_dict()})
    with tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        (dataset, _), transform_fn = (TRAIN, metadata) | tft_beam.AnalyzeAndTransformDataset(fn)
        transformed, _ = ((rows, metadata), transform_fn) | tft_beam.TransformDataset()
    return list(dataset), list(transformed)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    unseen = {"text": [b"pay zed"], "intent": [b"refund"], "slots": [b"O", b"B-payee"],
              "signals": [b"angry"]}
    return _transform([unseen], str(tmp_path_factory.mktemp("tft")))


def test_tokens_are_padded_and_truncated_to_max_tokens(outputs):
    train, _ = outputs
    assert [t.decode() for t in train[0]["tokens"]] == ["Pay", "$50", "to", "Bob.", ""]
    assert [t.decode() for t in train[1]["tokens"]] == ["pay", "bob", "now", "please", "thanks"]
    assert train[0]["token_ids"].shape == (5,)
    assert train[0]["token_ids"][4] == 0 and train[2]["token_ids"][2:].tolist() == [0, 0, 0]


def test_case_and_edge_punctuation_share_an_id(outputs):
    train, _ = outputs
    pay, bob = train[0]["token_ids"][0], train[0]["token_ids"][3]
    assert train[1]["token_ids"][0] == pay   # "Pay" == "pay"
    assert train[1]["token_ids"][1] == bob   # "Bob." == "bob"
    assert train[2]["token_ids"][1] != 0     # a lone "?" keeps its own id


def test_tags_stay_aligned_with_tokens_and_pads_are_unlabelled(outputs):
    train, _ = outputs
    tags = train[0]["slots_label"]
    assert tags[0] == tags[2]                     # both O
    assert len({tags[0], tags[1], tags[3]}) == 3  # O, B-amount, B-payee
    assert tags[4] == -1                          # padding
    assert train[2]["slots_label"].tolist() == [-1] * 5   # no tags: unlabelled


def test_label_ids_unknown_label_gets_reserved_id_missing_label_gets_minus_one(outputs):
    train, unseen = outputs
    assert train[0]["intent_label"] == train[1]["intent_label"] != train[2]["intent_label"]
    assert unseen[0]["intent_label"] == 2          # two known intents -> reserved id 2
    # The out-of-scope label stays out of the vocabulary: it gets the reserved last id too.
    assert train[3]["intent_label"] == 2 and {train[0]["intent_label"], train[2]["intent_label"]} == {0, 1}
    assert unseen[0]["signals_label"].tolist() == [2, -1, -1]
    # "zed" is out of vocabulary: after pay 50 to bob now please thanks ! balance ? (10 keys; the
    # vocabulary counts tokens beyond max_tokens too) and the +1 shift for padding.
    assert unseen[0]["token_ids"][1] == 1 + 10
    assert train[1]["signals_label"].tolist() == [-1, -1, -1]
    assert sorted(train[0]["signals_label"][:2].tolist()) == [0, 1]
    assert np.all(train[2]["signals_label"][1:] == -1)


@pytest.mark.parametrize("text", ["pay\u00a0bob", "a\u3000b c", "line\u2028break", "next\u0085line",
                                  "ogham\u1680space", "thin\u2009space", "sep\x1fx", " x\t\ny ",
                                  "caf\u00e9 \u2003ok", "", "один два"])
def test_tokens_are_what_str_split_gives_for_any_unicode_whitespace(text):
    """Serving gets raw text: a multi-byte space must not leave bytes on the previous token."""
    tokens = [t.decode("utf-8") for t in tokenize(tf.constant([text])).to_list()[0]]
    assert tokens == text.split()
