"""Warm start: a scheduled retraining begins from the weights of the model in production.

Each model artifact keeps, beside its SavedModel, the trained weights in model order and the
vocabularies that index some of them (`warm_start/`). A later training loads them when its tasks and
architecture are the same. Vocabularies are recomputed on every run's window of spans, so weights
indexed by one (token and character embeddings, each task's output layer) are copied entry by entry
for the words, characters and labels both runs know; new ones keep their fresh initialization.
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from mtmoe.trainer.heads import crf_scores, token_level_output_name


WARM_START_DIR = "warm_start"
STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.npz"
# Keys of the two embedding rows that no vocabulary entry names (a vocabulary never holds NUL).
PADDING, OUT_OF_VOCABULARY = "\0padding", "\0oov"
TOKENS, CHARS = "tokens", "chars"


def architecture(config) -> dict:
    """What must match for weights to carry over: the model (its initialisation aside), the text
    shape and the tasks."""
    return {"model": _model_architecture(config.model),
            "max_tokens": config.text.max_tokens, "max_chars": config.text.max_chars,
            "loss_weighting": config.training.loss_weighting,
            "tasks": [[task.name, task.type] for task in config.tasks]}


def _model_architecture(model_config) -> dict:
    model = dataclasses.asdict(model_config)
    del model["word_vectors"]  # where the embedding started; trained weights replace it
    return model


def embedding_rows(vocabulary: List[str]) -> List[str]:
    """Row keys of an id embedding: padding id 0, the vocabulary, the out-of-vocabulary id last."""
    return [PADDING, *vocabulary, OUT_OF_VOCABULARY]


def indexed_weights(model, config) -> Dict[str, tuple]:
    """{variable path: (vocabulary name, axes)} of the weights whose entries follow a vocabulary:
    `tokens` and `chars` (embedding rows), each task's output classes (its output layer, and its
    per-token output layer with model.token_level_classes), and a CRF's tags (both axes of its
    transitions)."""
    from mtmoe.trainer.model import CHARACTERS, EMBEDDING

    indexed = {model.get_layer(EMBEDDING).tokens.embeddings.path: (TOKENS, (0,))}
    if config.text.max_chars:
        indexed[model.get_layer(CHARACTERS).embedding.embeddings.path] = (CHARS, (0,))
    outputs = [(task.name, task.name) for task in config.tasks]
    outputs += [(token_level_output_name(name), name) for name in model.token_level_tasks]
    for layer_name, task_name in outputs:
        output = model.get_layer(layer_name)
        indexed[output.kernel.path] = (task_name, (-1,))
        indexed[output.bias.path] = (task_name, (-1,))
    for task, (transitions, start_scores) in crf_scores(model, config.tasks).items():
        indexed[transitions.path] = (task, (0, 1))
        indexed[start_scores.path] = (task, (0,))
    return indexed


def save(model, config, vocabularies: Dict[str, List[str]], model_dir: str) -> None:
    """Writes the weights (in model order) and their vocabularies into `model_dir`/warm_start."""
    folder = os.path.join(model_dir, WARM_START_DIR)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, WEIGHTS_FILE),
             *[np.asarray(variable.numpy()) for variable in model.weights])
    with open(os.path.join(folder, STATE_FILE), "w") as f:
        json.dump({"architecture": architecture(config), "vocabularies": vocabularies}, f)


def restore(model, config, vocabularies: Dict[str, List[str]], base_model_dir: Optional[str]
            ) -> dict:
    """Loads the base model's weights into `model` when compatible; returns what happened.

    `base_model_dir` is the base model artifact's folder (None: no blessed model yet). The result
    says `warm_started`, `base_model`, and either `reason` (why not; with `changed`, the settings
    that differ) or `carried` ({vocabulary: [entries carried over, entries now]}).
    """
    record = {"warm_started": False, "base_model": base_model_dir}
    folder = os.path.join(base_model_dir or "", WARM_START_DIR)
    if base_model_dir is None:
        return {**record, "reason": "no blessed model yet"}
    if not os.path.exists(os.path.join(folder, STATE_FILE)):
        return {**record, "reason": f"{folder}: the blessed model kept no weights to start from"}
    with open(os.path.join(folder, STATE_FILE)) as f:
        state = json.load(f)
    # A model option added since the base model was trained did not exist then: it had its default.
    before = state["architecture"]
    before["model"] = {**_model_architecture(type(config.model)()), **before["model"]}
    changed = _differences(before, architecture(config))
    if changed:
        return {**record, "reason": "changed since the blessed model: " + ", ".join(changed),
                "changed": changed}
    with np.load(os.path.join(folder, WEIGHTS_FILE)) as stored:
        arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    if len(arrays) != len(model.weights):
        return {**record, "reason": f"{len(arrays)} weights stored, the model has {len(model.weights)}"}
    indexed = indexed_weights(model, config)
    carried = {}
    values = []
    for variable, array in zip(model.weights, arrays):
        target = np.asarray(variable.numpy())
        if variable.path in indexed:
            name, axes = indexed[variable.path]
            array, kept = _remap(array, target, state["vocabularies"][name], vocabularies[name], axes)
            carried[name] = [kept, len(vocabularies[name])]
        if array.shape != target.shape:
            return {**record, "reason": f"weight {variable.path} has shape {array.shape}, "
                                        f"now {target.shape}"}
        values.append(array)
    for variable, value in zip(model.weights, values):
        variable.assign(value)
    return {**record, "warm_started": True, "carried": carried}


def _differences(before: dict, now: dict, prefix: str = "") -> List[str]:
    changed = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key} {old} -> {new}")
    return changed


def _remap(stored: np.ndarray, fresh: np.ndarray, old_keys: List[str], new_keys: List[str],
           axes: Tuple[int, ...]):
    """`fresh` with the entries along `axes` (each indexed by the same vocabulary) that `old_keys`
    also names taken from `stored`."""
    old_index = {key: i for i, key in enumerate(old_keys)}
    pairs = [(new, old_index[key]) for new, key in enumerate(new_keys) if key in old_index]
    result = np.array(fresh, copy=True)
    if pairs:
        new_positions, old_positions = (list(p) for p in zip(*pairs))
        axes = {axis % result.ndim for axis in axes}

        def index(positions, shape):
            return np.ix_(*[positions if a in axes else np.arange(n) for a, n in enumerate(shape)])

        result[index(new_positions, result.shape)] = stored[index(old_positions, stored.shape)]
    return result, len(pairs)
