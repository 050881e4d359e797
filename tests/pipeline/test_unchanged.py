"""A run with nothing new: what the serving model was trained on, and what counts as a change."""
import dataclasses
import os

import pytest

from mtmoe.core.config import load_config
from mtmoe.pipeline.paths import Paths
from mtmoe.pipeline.unchanged import (inputs_fingerprint, record_pushed, record_skipped,
                                      serving_unchanged, skipped_runs)


def _span(root, number, text="hello"):
    folder = root / "data" / f"span-{number}" / "train"
    folder.mkdir(parents=True)
    (folder / "data.tfrecord").write_text(text)


@pytest.fixture
def served(tmp_path):
    """A work dir whose version 7 was pushed by run "r1", trained on span 1 with the default config."""
    _span(tmp_path, 1)
    paths = Paths(data_root=str(tmp_path / "data"), work_dir=str(tmp_path / "work"))
    os.makedirs(os.path.join(paths.serving_dir, "7"))
    config = load_config()
    record_pushed(paths, inputs_fingerprint(config, paths), "r1", 7)
    return paths, config


def test_the_same_spans_config_and_code_find_the_serving_model(served):
    paths, config = served
    assert serving_unchanged(paths, inputs_fingerprint(config, paths)) == {
        "run_id": "r1", "version": 7, "inputs": inputs_fingerprint(config, paths)}


def test_a_new_span_is_new_data(served, tmp_path):
    paths, config = served
    _span(tmp_path, 2)
    assert serving_unchanged(paths, inputs_fingerprint(config, paths)) is None


def test_a_rewritten_span_file_is_new_data(served, tmp_path):
    paths, config = served
    (tmp_path / "data" / "span-1" / "train" / "data.tfrecord").write_text("hello, again")
    assert serving_unchanged(paths, inputs_fingerprint(config, paths)) is None


def test_a_changed_config_or_schema_retrains(served, tmp_path):
    paths, config = served
    changed = config.with_overrides(learning_rate=config.training.learning_rate / 2)
    assert serving_unchanged(paths, inputs_fingerprint(changed, paths)) is None
    schema = tmp_path / "other.schema.pbtxt"
    schema.write_text("feature { name: 'text' }")
    other_schema = dataclasses.replace(config, validation=dataclasses.replace(
        config.validation, schema=str(schema)))
    assert serving_unchanged(paths, inputs_fingerprint(other_schema, paths)) is None


def test_the_config_files_location_is_not_a_change(served):
    paths, config = served
    moved = dataclasses.replace(config, source="/elsewhere/config.yaml")
    assert serving_unchanged(paths, inputs_fingerprint(moved, paths)) is not None


def test_another_newest_serving_version_retrains(served):
    """A version pushed by hand (or a rollback that removed ours): the record no longer says what
    is serving."""
    paths, config = served
    os.makedirs(os.path.join(paths.serving_dir, "8"))
    assert serving_unchanged(paths, inputs_fingerprint(config, paths)) is None


def test_skipped_runs_are_kept_in_order(served):
    paths, config = served
    inputs = inputs_fingerprint(config, paths)
    serving = serving_unchanged(paths, inputs)
    first, second = record_skipped(paths, serving, inputs), record_skipped(paths, serving, inputs)
    assert skipped_runs(paths) == [first, second]
    assert first["run_id"] < second["run_id"]
    assert (first["spans"], first["serving_run"], first["version"]) == ([1], "r1", 7)
