"""The task-weight search: space, objective, budget and resumption, and uncertainty weighting."""
import dataclasses
import json

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from mtmoe.core.config import load_config
from mtmoe.core.tasks import objective
from mtmoe.trainer.callbacks import LearnedLossWeights, ValidationScores
from mtmoe.trainer.model import build_model, compile_model, effective_loss_weights
from mtmoe.trainer.tuning import (OBJECTIVE_METRIC, SearchBudget, apply_hyperparameters,
                                  completed_trials, define_search_space, make_tuner, project_name,
                                  reference_row, trial_table)

VOCABULARY = {"token_ids": 40, "char_ids": 20}
CLASSES = {"intent": 5, "slots": 7, "sentiment": 4, "signals": 3}
NAMES = {"intent": [f"i{i}" for i in range(5)],
         "slots": ["O", "B-a", "I-a", "B-b", "I-b", "B-c", "<unknown>"],
         "sentiment": [f"s{i}" for i in range(4)], "signals": [f"g{i}" for i in range(3)]}


def _config(**tuning):
    config = load_config()
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, embedding_dim=16, expert_dim=8, num_heads=2,
                                          num_blocks=1),
        tuning=dataclasses.replace(config.tuning, **tuning))
    return config


def _data(config, size=24, seed=0):
    rng = np.random.default_rng(seed)
    length, chars = config.text.max_tokens, config.text.max_chars
    ids = rng.integers(1, VOCABULARY["token_ids"], (size, length))
    ids[:, 6:] = 0
    slots = rng.integers(0, 6, (size, length))
    slots[:, 6:] = -1
    inputs = {"token_ids": ids, "char_ids": rng.integers(0, 20, (size, length, chars))}
    targets = {"intent": rng.integers(0, 5, size), "slots": slots,
               "sentiment": rng.integers(-1, 4, size),
               "signals": rng.integers(0, 2, (size, 3)).astype("float32")}
    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(8)


def test_search_space_gives_each_task_a_log_uniform_weight_and_optional_knobs():
    config = _config(learning_rate_range=(1e-4, 1e-2), top_k_choices=(1, 4),
                     routed_experts_choices=(2, 8))
    hp = keras_tuner.HyperParameters()
    values = define_search_space(hp, config)
    assert set(values) == {"loss_weight_intent", "loss_weight_slots", "loss_weight_sentiment",
                           "loss_weight_signals", "learning_rate", "top_k", "routed_experts"}
    weight = hp.get_config()["space"][0]["config"]
    assert (weight["min_value"], weight["max_value"], weight["sampling"]) == (0.1, 10.0, "log")

    applied = apply_hyperparameters(config, {"loss_weight_intent": 3.5, "learning_rate": 1e-3,
                                             "top_k": 4, "routed_experts": 2})
    assert [t.loss_weight for t in applied.tasks] == [3.5, 1.0, 0.5, 0.5]
    assert applied.training.learning_rate == 1e-3
    assert (applied.model.routed_experts, applied.model.top_k) == (2, 2)  # top_k capped
    assert apply_hyperparameters(config, {}) == config


def test_search_folder_ignores_budget_and_thresholds_but_not_the_space():
    config = _config()
    name = project_name(config)
    assert project_name(_config(max_trials=30, budget_minutes=5.0)) == name
    assert project_name(dataclasses.replace(config, tasks=tuple(
        dataclasses.replace(t, min_value=0.0) for t in config.tasks))) == name
    assert project_name(_config(loss_weight_range=(0.5, 2.0))) != name
    assert project_name(config.with_overrides(learning_rate=0.1)) != name


@pytest.mark.slow
def test_objective_does_not_depend_on_the_loss_weights():
    config = _config()
    data = _data(config)
    keras.utils.set_random_seed(1)
    model = build_model(config, VOCABULARY, CLASSES)
    results = []
    for weights in ({"intent": 1.0, "slots": 1.0}, {"intent": 9.0, "slots": 0.1}):
        compile_model(model, config.with_loss_weights(weights))  # same weights, same predictions
        callback = ValidationScores(data, config.tasks, NAMES)
        callback.set_model(model)
        logs = {}
        callback.on_epoch_end(0, logs)
        results.append((logs[OBJECTIVE_METRIC], model.evaluate(data, verbose=0, return_dict=True)))
    (objective_a, evaluated_a), (objective_b, evaluated_b) = results
    assert objective_a == objective_b
    assert evaluated_a["loss"] != pytest.approx(evaluated_b["loss"], rel=1e-3)  # the loss does move


def test_objective_is_the_configured_weighted_mean_of_primary_metrics():
    config = _config()
    scores = {"intent": {"accuracy": 0.9}, "slots": {"span_f1": 0.5},
              "sentiment": {"accuracy": 0.7}, "signals": {"micro_f1": 0.3}}
    assert objective(scores, config.tasks) == pytest.approx(0.6)
    assert objective(scores, config.tasks, {"intent": 1.0, "slots": 3.0}) == pytest.approx(0.6)
    assert objective(scores, config.tasks, {"slots": 1.0}) == pytest.approx(0.5)


def _search(config, directory, budget_seconds=0.0):
    data = _data(config)

    def build(hp):
        trial_config = apply_hyperparameters(config, define_search_space(hp, config))
        return compile_model(build_model(trial_config, VOCABULARY, CLASSES), trial_config)

    tuner = make_tuner(config, build, str(directory))
    tuner.search(data, validation_data=data, epochs=config.tuning.epochs_per_trial, verbose=0,
                 callbacks=[ValidationScores(data, config.tasks, NAMES),
                            SearchBudget(tuner.oracle, budget_seconds)])
    return tuner


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_search_stops_at_its_budget_and_a_rerun_resumes_it(tmp_path, algorithm):
    config = _config(algorithm=algorithm, max_trials=2, epochs_per_trial=1)
    # A one-block dense trunk: trials here test the search, not the model, and trace quickly.
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, trunk="dense",
                                                                   num_blocks=1))
    _search(config, tmp_path, budget_seconds=1e-6)  # the budget is gone after the first trial
    assert completed_trials(str(tmp_path), config) == 1
    tuner = _search(config, tmp_path)
    assert completed_trials(str(tmp_path), config) == 2
    rows = trial_table(str(tmp_path), config)
    assert [row["objective"] for row in rows] == sorted((row["objective"] for row in rows),
                                                        reverse=True)
    best = tuner.get_best_hyperparameters()[0].values
    assert rows[0]["values"] == best
    assert set(rows[0]["metrics"]) == {t.name for t in config.tasks}
    assert all(0.0 <= value <= 1.0 for value in rows[0]["metrics"].values())


@pytest.mark.slow
def test_uncertainty_weighting_learns_weights_and_uses_kendalls_loss():
    config = _config().with_overrides(loss_weighting="uncertainty")
    data = _data(config)
    keras.utils.set_random_seed(3)
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    assert effective_loss_weights(model, config) == {t.name: 1.0 for t in config.tasks}

    model.log_variances.assign([0.5, -0.5, 1.0, 0.0])
    x, y = next(iter(data))
    y_pred = model(x, training=False)
    task_losses = [float(model.loss[t.name](y[t.name], y_pred[t.name])) for t in config.tasks]
    balance = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    expected = sum(np.exp(-s) * loss + s / 2 for s, loss in zip([0.5, -0.5, 1.0, 0.0], task_losses))
    assert float(model.compute_loss(x, y, y_pred)) == pytest.approx(expected + balance, rel=1e-5)

    model.log_variances.assign([0.0] * 4)
    history = model.fit(data, epochs=2, verbose=0, callbacks=[LearnedLossWeights()])
    learned = effective_loss_weights(model, config)
    assert set(learned) == {t.name for t in config.tasks}
    assert all(w != pytest.approx(1.0, abs=1e-4) for w in learned.values())
    assert history.history["intent_loss_weight"][-1] == pytest.approx(learned["intent"])


def test_reference_training_becomes_a_row_at_its_best_epoch():
    config = _config()
    history = {OBJECTIVE_METRIC: [0.4, 0.6, 0.5],
               **{f"val_{t.name}_{m}": [0.1, 0.2, 0.3] for t, m in
                  zip(config.tasks, ["accuracy", "span_f1", "accuracy", "micro_f1"])}}
    training = {"loss_weights": {t.name: 0.5 for t in config.tasks}}
    row = reference_row("uncertainty", history, training, config)
    assert row["objective"] == 0.6 and row["metrics"]["slots"] == 0.2
    assert row["values"]["loss_weight_intent"] == 0.5
    assert json.loads(json.dumps(row)) == row  # summary.json holds it as it is
