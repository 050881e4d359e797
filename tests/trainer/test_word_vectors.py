"""Pretrained word vectors: vocabulary words get theirs, every other row keeps its initialisation."""
import numpy as np
import pytest

from mtmoe.core.config import load_config
from mtmoe.core.errors import UserError
from mtmoe.core.feature_names import CHAR_IDS, TOKEN_IDS
from mtmoe.trainer import warm_start, word_vectors
from mtmoe.trainer.model import EMBEDDING, build_model

DIM = 4


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("tasks: [{name: intent, type: classification, label_field: intent}]\n"
                    f"model: {{embedding_dim: {DIM}, num_heads: 2, word_vectors: vectors.txt}}\n")
    return path


def _vectors_file(folder, lines):
    path = folder / "vectors.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_vocabulary_words_get_their_vectors_and_other_rows_keep_their_initialisation(tmp_path, config):
    # "weather" is a dev/test word: not in the training vocabulary, so never kept.
    _vectors_file(tmp_path, ["5 4", "play 1 2 3 4", "weather 9 9 9 9", "song 0.5 -0.5 0 1",
                             "play 7 7 7 7"])
    loaded = load_config(str(config))
    rows = warm_start.embedding_rows(["play", "music", "song"])
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(loaded, {TOKEN_IDS: len(rows), CHAR_IDS: 10}, {"intent": 3})
    table = model.get_layer(EMBEDDING).tokens.embeddings
    before = np.array(table.numpy())

    vectors = word_vectors.read_vectors(loaded.model.word_vectors, rows, DIM)
    word_vectors.initialise(table, rows, vectors)

    assert sorted(vectors) == ["play", "song"]  # the file's first "play" line wins
    after = table.numpy()
    np.testing.assert_array_equal(after[rows.index("play")], [1, 2, 3, 4])
    np.testing.assert_array_equal(after[rows.index("song")], [0.5, -0.5, 0, 1])
    for key in (warm_start.PADDING, "music", warm_start.OUT_OF_VOCABULARY):
        np.testing.assert_array_equal(after[rows.index(key)], before[rows.index(key)])
    assert word_vectors.coverage("f", vectors, rows) == {
        "path": "f", "covered": 2, "vocabulary": 3, "hit_rate": round(2 / 3, 4)}


def test_a_vector_of_the_wrong_width_names_the_file_and_line(tmp_path):
    path = _vectors_file(tmp_path, ["play 1 2 3 4", "song 1 2 3"])
    with pytest.raises(UserError, match=r"vectors.txt:2: 3 numbers for 'song'; model.embedding_dim is 4"):
        word_vectors.read_vectors(path, ["play", "song"], DIM)


def test_a_line_that_is_not_numbers_names_the_file_and_line(tmp_path):
    path = _vectors_file(tmp_path, ["play 1 2 x 4"])
    with pytest.raises(UserError, match=r"vectors.txt:1: not a word followed by numbers"):
        word_vectors.read_vectors(path, ["play"], DIM)


def test_the_config_resolves_the_file_beside_it_and_refuses_a_missing_one(tmp_path, config):
    with pytest.raises(UserError, match=r"model.word_vectors: .*vectors.txt: file not found"):
        load_config(str(config))
    _vectors_file(tmp_path, ["play 1 2 3 4"])
    assert load_config(str(config)).model.word_vectors == str(tmp_path / "vectors.txt")


def test_warm_start_ignores_where_the_embedding_started(tmp_path, config):
    """Trained weights replace the initial vectors: a changed file must not block warm start."""
    _vectors_file(tmp_path, ["play 1 2 3 4"])
    with_vectors = load_config(str(config))
    import dataclasses

    without = dataclasses.replace(with_vectors, model=dataclasses.replace(with_vectors.model,
                                                                          word_vectors=""))
    assert warm_start.architecture(with_vectors) == warm_start.architecture(without)
