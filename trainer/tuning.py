"""The Keras Tuner search: its space from the config, its objective, its budget and its results.

`tuner_fn` (trainer/module.py) builds the tuner from here; the Trainer applies the best trial's
values with `apply_hyperparameters`, the same function every trial's model is built with.
"""
import dataclasses
import glob
import hashlib
import json
import os
import time
from typing import Dict, List

import keras
import keras_tuner

from mtmoe.core.tasks import OBJECTIVE, primary_validation_metric

OBJECTIVE_METRIC = f"val_{OBJECTIVE}"


def loss_weight_name(task) -> str:
    return f"loss_weight_{task.name}"


def define_search_space(hp: keras_tuner.HyperParameters, config) -> Dict[str, object]:
    """Registers the config's search space on `hp` and returns this trial's values."""
    tuning = config.tuning
    low, high = tuning.loss_weight_range
    values = {loss_weight_name(task): hp.Float(loss_weight_name(task), low, high, sampling="log")
              for task in config.tasks}
    if tuning.learning_rate_range:
        values["learning_rate"] = hp.Float("learning_rate", *tuning.learning_rate_range,
                                           sampling="log")
    if tuning.top_k_choices:
        values["top_k"] = hp.Choice("top_k", list(tuning.top_k_choices))
    if tuning.routed_experts_choices:
        values["routed_experts"] = hp.Choice("routed_experts", list(tuning.routed_experts_choices))
    return values


def apply_hyperparameters(config, values: Dict[str, object]):
    """The config with searched values in place: task loss weights, learning rate, routing.

    top_k is capped at the number of routed experts when both are searched.
    """
    config = config.with_loss_weights({task.name: values[loss_weight_name(task)]
                                       for task in config.tasks if loss_weight_name(task) in values})
    if "learning_rate" in values:
        config = config.with_overrides(learning_rate=float(values["learning_rate"]))
    model = config.model
    routed = int(values.get("routed_experts", model.routed_experts))
    top_k = min(int(values.get("top_k", model.top_k)), routed)
    return dataclasses.replace(config, model=dataclasses.replace(model, routed_experts=routed,
                                                                 top_k=top_k))


def project_name(config) -> str:
    """The search's folder name: a hash of everything that makes trials comparable.

    The trial count and the time budget stay out, so raising them extends the same search; so does
    the span window, like the data it selects.
    """
    raw = config.to_dict()
    raw["tuning"] = {k: v for k, v in raw["tuning"].items()
                     if k not in ("enabled", "max_trials", "budget_minutes")}
    for task in raw["tasks"]:
        task.pop("min_value")
        task.pop("max_drop")
    for key in ("pipeline", "evaluation", "spans", "source"):
        raw.pop(key)
    return "search-" + hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


class SearchBudget(keras.callbacks.Callback):
    """Ends the search after the trial during which the wall-clock budget ran out.

    Keras Tuner has no time budget; lowering the oracle's trial limit to the trials made so far
    stops it at the next trial boundary. The limit is not saved with the oracle, so a re-run with
    the same config resumes the search.
    """

    def __init__(self, oracle, seconds: float):
        super().__init__()
        self.oracle = oracle
        self.deadline = time.monotonic() + seconds if seconds else None

    def on_train_end(self, logs=None):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.oracle.max_trials = len(self.oracle.trials)

    def __deepcopy__(self, memo):
        return self  # Keras Tuner deep-copies callbacks per trial; the oracle must stay shared


def make_tuner(config, build_model, directory: str) -> keras_tuner.Tuner:
    """The configured Keras Tuner, resuming the search saved under `directory` if there is one."""
    tuning = config.tuning
    common = dict(hypermodel=build_model,
                  objective=keras_tuner.Objective(OBJECTIVE_METRIC, direction="max"),
                  directory=directory, project_name=project_name(config), overwrite=False,
                  seed=tuning.seed)
    if tuning.algorithm == "hyperband":
        tuner = keras_tuner.Hyperband(max_epochs=tuning.epochs_per_trial, factor=3,
                                      hyperband_iterations=1, **common)
        tuner.oracle.max_trials = tuning.max_trials
        return tuner
    if tuning.algorithm == "random":
        return keras_tuner.RandomSearch(max_trials=tuning.max_trials, **common)
    return keras_tuner.BayesianOptimization(max_trials=tuning.max_trials, **common)


def completed_trials(directory: str, config) -> int:
    """How many trials of this config's search are finished (0 when it never ran)."""
    return sum(1 for row in trial_table(directory, config) if row["status"] == "COMPLETED")


def trial_table(directory: str, config) -> List[dict]:
    """One row per trial of this config's search, best first: status, searched values, per-task
    validation metrics and the objective at the trial's best epoch."""
    rows = []
    for path in glob.glob(os.path.join(directory, project_name(config), "trial_*", "trial.json")):
        with open(path) as f:
            trial = json.load(f)
        metrics = trial.get("metrics", {}).get("metrics", {})
        best_step = trial.get("best_step") or 0

        def at_best(name):
            observations = metrics.get(name, {}).get("observations", [])
            values = [o["value"][0] for o in observations if o["step"] == best_step] or \
                [o["value"][0] for o in observations[-1:]]
            return values[0] if values else None

        rows.append({
            "trial": trial["trial_id"],
            "status": trial["status"],
            "values": trial["hyperparameters"]["values"],
            "metrics": {task.name: at_best(primary_validation_metric(task))
                        for task in config.tasks},
            "objective": trial.get("score"),
        })
    return sorted(rows, key=lambda row: (row["objective"] is None, -(row["objective"] or 0)))


def reference_configs(config) -> Dict[str, object]:
    """What a search is compared with, each trained as long as one trial: equal task weights, and
    weights learned by uncertainty weighting."""
    short = config.with_overrides(epochs=config.tuning.epochs_per_trial)
    return {
        "equal_weights": short.with_loss_weights({task.name: 1.0 for task in config.tasks}),
        "uncertainty": short.with_overrides(loss_weighting="uncertainty"),
    }


def reference_row(name: str, history: Dict[str, list], training: dict, config) -> dict:
    """A reference training as a trial-table row, at its epoch with the best objective."""
    best = max(range(len(history[OBJECTIVE_METRIC])), key=history[OBJECTIVE_METRIC].__getitem__)
    return {
        "trial": name,
        "status": "REFERENCE",
        "values": {loss_weight_name(task): training["loss_weights"][task.name] for task in config.tasks},
        "metrics": {task.name: history[primary_validation_metric(task)][best]
                    for task in config.tasks},
        "objective": history[OBJECTIVE_METRIC][best],
    }
