"""Warm start: weights carry over by vocabulary entry, and only into a model of the same shape."""
import dataclasses
import os

import numpy as np
import pytest

from mtmoe.core.config import load_config
from mtmoe.core.feature_names import CHAR_IDS, TOKEN_IDS
from mtmoe.trainer import warm_start
from mtmoe.trainer.model import build_model


def _vocabularies(config, tokens, labels):
    vocabularies = {warm_start.TOKENS: warm_start.embedding_rows(tokens),
                    warm_start.CHARS: warm_start.embedding_rows(list("abcdefg"))}
    for task in config.tasks:
        vocabularies[task.name] = labels + ["<unknown>"]
    return vocabularies


def _model(config, vocabularies, seed):
    import keras

    keras.utils.set_random_seed(seed)
    return build_model(config, {TOKEN_IDS: len(vocabularies[warm_start.TOKENS]),
                                CHAR_IDS: len(vocabularies[warm_start.CHARS])},
                       {task.name: len(vocabularies[task.name]) for task in config.tasks})


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def base(tmp_path_factory, config):
    folder = str(tmp_path_factory.mktemp("base_model"))
    vocabularies = _vocabularies(config, ["transfer", "card", "lost"], ["a", "b"])
    model = _model(config, vocabularies, seed=1)
    warm_start.save(model, config, vocabularies, folder)
    return folder, model, vocabularies


def _by_path(model):
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


def test_weights_carry_over_by_vocabulary_entry(config, base):
    folder, base_model, old = base
    new = _vocabularies(config, ["lost", "balance", "transfer"], ["b", "c", "a"])
    model = _model(config, new, seed=2)
    fresh = _by_path(model)
    record = warm_start.restore(model, config, new, folder)
    assert record["warm_started"] is True and record["base_model"] == folder
    # padding, oov, "lost", "transfer" of 5 rows; "a", "b" and the unknown class of 4 classes.
    assert record["carried"][warm_start.TOKENS] == [4, 5]
    assert record["carried"]["intent"] == [3, 4]
    before, after = _by_path(base_model), _by_path(model)
    tokens = "embedding/tokens/embeddings"
    for key in ("\0padding", "lost", "transfer", "\0oov"):
        assert np.array_equal(after[tokens][new[warm_start.TOKENS].index(key)],
                              before[tokens][old[warm_start.TOKENS].index(key)]), key
    balance = new[warm_start.TOKENS].index("balance")
    assert np.array_equal(after[tokens][balance], fresh[tokens][balance])
    for label in ("a", "b", "<unknown>"):
        assert np.array_equal(after["intent/kernel"][:, new["intent"].index(label)],
                              before["intent/kernel"][:, old["intent"].index(label)])
    assert np.array_equal(after["intent/kernel"][:, new["intent"].index("c")],
                          fresh["intent/kernel"][:, new["intent"].index("c")])
    # The rest in model order (automatic layer names differ between two models of one process).
    indexed = warm_start.indexed_weights(model, config)
    unchanged = [(now, then) for now, then in zip(model.weights, base_model.weights)
                 if now.path not in indexed]
    assert len(unchanged) > 40
    for now, then in unchanged:
        assert np.array_equal(now.numpy(), then.numpy()), now.path


def test_a_changed_architecture_trains_from_scratch(config, base):
    folder, _, old = base
    changed = dataclasses.replace(config, model=dataclasses.replace(config.model, routed_experts=4))
    model = _model(changed, old, seed=3)
    fresh = _by_path(model)
    record = warm_start.restore(model, changed, old, folder)
    assert record["warm_started"] is False
    assert record["reason"] == "changed since the blessed model: model.routed_experts 8 -> 4"
    assert all(np.array_equal(value, fresh[path]) for path, value in _by_path(model).items())


def test_a_changed_architecture_is_one_line_on_the_console(config, base, capsys):
    from mtmoe.trainer.module import _warm_start

    folder, _, old = base
    changed = dataclasses.replace(config, model=dataclasses.replace(
        config.model, routed_experts=4, top_k=1, dropout=0.2, embedding_dim=32))
    record = _warm_start(_model(changed, old, seed=3), changed, old,
                         os.path.join(folder, "Format-Serving"))
    assert record["warm_started"] is False and len(record["changed"]) == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Trainer: training from scratch ({config.training.epochs} epochs), not from "
                     "the blessed model: the config changed the model (model.dropout 0.1 -> 0.2, "
                     "model.embedding_dim 64 -> 32, model.routed_experts 8 -> 4 and 1 more)"]


def test_a_model_option_added_since_the_base_model_counts_as_its_default(config, base, tmp_path):
    import json
    import shutil

    folder, _, old = base
    copy = str(tmp_path / "older_base")
    shutil.copytree(folder, copy)
    state_file = os.path.join(copy, warm_start.WARM_START_DIR, warm_start.STATE_FILE)
    with open(state_file) as f:
        state = json.load(f)
    del state["architecture"]["model"]["token_level_classes"]  # saved before the option existed
    with open(state_file, "w") as f:
        json.dump(state, f)
    assert warm_start.restore(_model(config, old, seed=3), config, old, copy)["warm_started"]
    on = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                               token_level_classes=True))
    record = warm_start.restore(_model(on, old, seed=3), on, old, copy)
    assert record["reason"] == "changed since the blessed model: model.token_level_classes False -> True"


def test_a_changed_task_list_trains_from_scratch(config, base):
    folder, _, old = base
    fewer = dataclasses.replace(config, tasks=config.tasks[:2])
    model = _model(fewer, old, seed=4)
    record = warm_start.restore(model, fewer, old, folder)
    assert record["warm_started"] is False and record["reason"].startswith(
        "changed since the blessed model: tasks ")


def test_without_a_blessed_model_or_its_weights_it_says_why(config, base, tmp_path):
    _, _, old = base
    model = _model(config, old, seed=5)
    assert warm_start.restore(model, config, old, None)["reason"] == "no blessed model yet"
    record = warm_start.restore(model, config, old, str(tmp_path))
    assert record["warm_started"] is False and "kept no weights" in record["reason"]


def test_a_crfs_transitions_follow_the_tag_vocabulary_on_both_axes():
    from mtmoe.trainer.warm_start import _remap

    stored = np.arange(9.0).reshape(3, 3)  # tags a, b, c
    fresh = -np.ones((3, 3))                # tags c, a, d
    result, kept = _remap(stored, fresh, ["a", "b", "c"], ["c", "a", "d"], (0, 1))
    assert kept == 2
    np.testing.assert_array_equal(result, [[8, 6, -1], [2, 0, -1], [-1, -1, -1]])


def test_per_token_class_outputs_follow_their_tasks_vocabulary():
    config = load_config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   token_level_classes=True))
    model = _model(config, _vocabularies(config, ["card"], ["a", "b"]), seed=1)
    indexed = warm_start.indexed_weights(model, config)
    per_token = {path: vocabulary for path, (vocabulary, _) in indexed.items() if "per_token" in path}
    classifications = sorted(t.name for t in config.tasks if t.type == "classification")
    assert sorted(per_token.values()) == sorted(2 * classifications)  # a kernel and a bias each
    assert all(path.startswith(per_token[path] + "_per_token/") for path in per_token)
