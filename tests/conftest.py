"""Shared fixtures. Importing mtmoe first fixes the Keras environment before TensorFlow loads.

Two models serve the tests, both of the tiny test config (`tiny_config`):
- `tiny_export`: trained in this process on a few dozen sample rows through the real Transform
  (`preprocessing_fn` under tft_beam) and exported with the real `export_serving_model`, in seconds;
  for the export, serving and client tests.
- `pipeline_run`: `mtmoe run` through the whole TFX chain once per test session; for the end-to-end
  scenarios, which share its work dir.
"""
import collections
import contextlib
import dataclasses
import functools
import io
import json
import os
import random
import string
import subprocess
import sys
import time
from importlib import resources

import numpy as np
import pytest
import yaml

import mtmoe  # noqa: F401

MTMOE = os.path.join(os.path.dirname(sys.executable), "mtmoe")


def pytest_collection_modifyitems(config, items):
    """The end-to-end tests first (the rest in their order): they are the longest file, and under
    `make test` (xdist, a file to a worker) a worker then starts them at once while the other works
    through the rest, instead of taking them up after other files."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def cli():
    """Runs `mtmoe` in this process through the CLI's `main()`, capturing what it prints."""
    from mtmoe.cli import main

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit:  # argparse: --help, or a usage error
                code = exit.code or 0
        return Result(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture(scope="session")
def cli_process():
    """Runs the installed `mtmoe` console script in a subprocess, as a user would."""

    def run(*args, timeout=300):
        return subprocess.run([MTMOE, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture
def write_jsonl(tmp_path):
    """Writes {split: [row, ...]} as <tmp>/in/<split>.jsonl and returns the folder."""

    def write(splits):
        folder = tmp_path / "in"
        folder.mkdir(exist_ok=True)
        for split, rows in splits.items():
            (folder / f"{split}.jsonl").write_text(
                "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return str(folder)

    return write


@pytest.fixture
def default_tasks():
    from mtmoe.core.config import load_config

    return load_config().tasks


def tiny_config() -> dict:
    """The default config's tasks with a tiny model (one MoE block, 4 routed experts, width 16) and
    short texts, so that tracing and training take seconds; value thresholds at 0 and drops up to
    0.25 allowed (a few of a small eval split's examples move the metrics by more than the
    default); a two-trial, one-epoch task-weight search; one-epoch warm-started trainings; Beam in
    the pipeline's own process (worker processes cost more than they bring on a small sample)."""
    from mtmoe.core.config import load_config

    config = yaml.safe_load(resources.files("mtmoe.configs").joinpath("default.yaml").read_text())
    for task in config["tasks"]:
        task["min_value"] = 0.0
        task["max_drop"] = 0.25
    config["text"].update(max_tokens=16, max_chars=8)
    config["model"].update(embedding_dim=16, char_dim=8, num_blocks=1, num_heads=2, ff_dim=32,
                           num_experts=2, routed_experts=4, top_k=2, expert_dim=8, dropout=0.0)
    config["training"].update(epochs=6, learning_rate=0.01, warm_start_epochs=1)
    config["tuning"] = {"enabled": True, "algorithm": "random", "max_trials": 2, "epochs_per_trial": 1}
    config["pipeline"]["beam_workers"] = 1
    # The packaged schema (curated from the default sample), from wherever the copy is written; the
    # small eval split of a 400-example span moves label shares by more than the default skew.
    config["validation"]["schema"] = load_config().validation.schema
    config["validation"]["max_split_skew"] = 0.4
    return config


@pytest.fixture
def make_tiny_config():
    """`tiny_config`, for tests that write configs of their own from it."""
    return tiny_config


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, cli):
    """`mtmoe run` on a 400-example sample (span 1) with the tiny config, value thresholds at 0 so
    that the first model is blessed and pushed. Its work dir is shared: later fixtures may add spans
    and run the pipeline there again (`rerun(config, *options)`, or `run_command` to start one
    themselves), but only the Pusher may add versions to its serving folder.

    The first run is the console script in a process of its own, as a user starts it (its console
    output is checked); the later ones call the CLI's `main()` in this process, the same code
    without starting and importing TensorFlow and TFX anew for each (about 10 s a run)."""
    root = tmp_path_factory.mktemp("e2e")
    config = tiny_config()
    assert cli("data", "sample", "--out", root / "sample", "--num-examples", 400).returncode == 0
    vectors = _word_vectors(root / "sample", root / "vectors.txt", config["model"]["embedding_dim"])
    config["model"]["word_vectors"] = str(vectors["path"])
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli("data", "convert", "--format", "jsonl", root / "sample", root / "data").returncode == 0

    def run_command(config=root / "config.yaml", *options, data=root / "data", command="run"):
        return [MTMOE, command, "--config", str(config), "--data", str(data),
                "--work-dir", str(root / "work"), *options]

    def exited(result, code=0):
        assert result.returncode == code, result.stdout[-3000:] + result.stderr[-5000:]
        return result

    def rerun(config=root / "config.yaml", *options, data=root / "data", code=0, command="run"):
        return exited(cli(*run_command(config, *options, data=data, command=command)[1:]), code)

    started = time.monotonic()
    result = exited(subprocess.run(run_command(), capture_output=True, text=True, timeout=1500))
    return {"root": root, "vectors": vectors, "work": root / "work", "config": config,
            "stdout": result.stdout, "stderr": result.stderr,
            "seconds": time.monotonic() - started,
            "summary": json.loads((root / "work" / "summary.json").read_text()), "rerun": rerun,
            "served": sorted(os.listdir(root / "work" / "serving_model")),
            "run_command": run_command}


def _vocabulary_keys(path) -> collections.Counter:
    """The vocabulary keys of a JSONL split's texts, as Transform makes them (ASCII case and edge
    punctuation aside)."""
    keys = collections.Counter()
    with open(path) as f:
        for line in f:
            keys.update(token.lower().strip(string.punctuation) or token.lower()
                        for token in json.loads(line)["text"].split())
    return keys


def _word_vectors(sample, out, dim) -> dict:
    """A vectors file for the 3 most common training words and for every word only the eval and
    test splits have (which the model must never get a vector for): {path, training, held_out}."""
    train = _vocabulary_keys(sample / "train.jsonl")
    held_out = sorted({key for split in ("eval", "test")
                       for key in _vocabulary_keys(sample / f"{split}.jsonl") if key not in train})
    assert held_out, "the sample has no eval/test-only word to check"
    training = [word for word, _ in train.most_common(3)]
    out.write_text("".join(f"{w} {' '.join(['0.5'] * dim)}\n" for w in training + held_out))
    return {"path": out, "training": training, "held_out": held_out}


def _raw_instances(rows, tasks):
    """Sample rows as the raw features Transform reads: the text and every label field as lists."""
    return [{"text": [row["text"].encode()],
             **{t.label_field: [v.encode() for v in (row[t.label_field] if isinstance(
                 row.get(t.label_field), list) else [row[t.label_field]] if t.label_field in row
                 else [])] for t in tasks}}
            for row in rows]


@pytest.fixture(scope="session")
def tiny_transform(tmp_path_factory):
    """The real `preprocessing_fn` analysed on 64 sample rows with tft_beam, as Transform runs it:
    (config, TFTransformOutput, transformed features {name: array [64, ...]}, raw rows)."""
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from mtmoe.components.transform import preprocessing_fn
    from mtmoe.core.config import Config
    from mtmoe.core.sample import make_example

    config = Config.from_dict(tiny_config())
    rng = random.Random(3)
    rows = [make_example(rng) for _ in range(64)]
    instances = _raw_instances(rows, config.tasks)
    spec = {"text": tf.io.FixedLenFeature([1], tf.string),
            **{t.label_field: tf.io.VarLenFeature(tf.string) for t in config.tasks}}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    root = tmp_path_factory.mktemp("tiny_transform")
    fn = functools.partial(preprocessing_fn, custom_config={"config": config.to_dict()})
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tmp"),
                                                        force_tf_compat_v1=False):
        raw = pipeline | beam.Create(instances)
        transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "transform_graph"))
    # TFX's Transform also writes the raw metadata beside it: the export reads the raw text's spec.
    metadata_io.write_metadata(metadata, str(root / "transform_graph" / "metadata"))
    tft_output = tft.TFTransformOutput(str(root / "transform_graph"))
    raw_features = {"text": tf.constant([i["text"] for i in instances]),
                    **{t.label_field: tf.ragged.constant([i[t.label_field] for i in instances],
                                                         dtype=tf.string).to_sparse()
                       for t in config.tasks}}
    transformed = {k: v.numpy() for k, v in tft_output.transform_raw_features(raw_features).items()}
    return config, tft_output, transformed, rows


@pytest.fixture(scope="session")
def tiny_export(tiny_transform, tmp_path_factory):
    """A tiny model trained for a few steps on the transformed rows and exported by the real
    `export_serving_model`, with a temperature per calibrated task and a rejection threshold for
    the intent, as version 1 of a serving folder: {"config", "serving_dir", "version", "model",
    "texts", "features", "temperatures", "reject_below"}."""
    import keras
    import tensorflow as tf

    from mtmoe.trainer.export import export_serving_model
    from mtmoe.trainer.features import model_inputs, model_targets, vocabularies, vocabulary_sizes
    from mtmoe.trainer.heads import calibrate
    from mtmoe.trainer.model import build_model, compile_model

    config, tft_output, features, rows = tiny_transform
    keras.utils.set_random_seed(1)
    num_classes = {name: len(v) for name, v in vocabularies(tft_output, config).items()
                   if name in {t.name for t in config.tasks}}
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(16).map(
        lambda f: (model_inputs(f), model_targets(f, config.tasks, num_classes)))
    model = compile_model(build_model(config, vocabulary_sizes(tft_output, config), num_classes),
                          config)
    model.fit(dataset, epochs=2, verbose=0)
    serving_dir = tmp_path_factory.mktemp("tiny_export") / "serving_model"
    version = serving_dir / "1"
    texts = [row["text"] for row in rows[:8]]
    # Temperatures as calibration fits them, away from 1 so that a graph without them differs.
    temperatures = {task.name: 2.0 + i for i, task in enumerate(config.tasks)
                    if task.type != "token_tagging"}
    # The intent answers out of scope below the median top in-scope probability of the texts.
    first = {name: value[:len(texts)] for name, value in features.items()}
    intent = calibrate(config.tasks, model(model_inputs(first)), temperatures)["intent"].numpy()
    reject_below = {"intent": float(np.median(intent[:, :-1].max(axis=-1)))}
    export_serving_model(model, tft_output, config, str(version), texts, temperatures, reject_below)
    return {"config": config, "serving_dir": serving_dir, "version": str(version), "model": model,
            "texts": texts, "features": features, "temperatures": temperatures,
            "reject_below": reject_below}
