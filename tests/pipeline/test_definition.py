"""create_pipeline builds the DAG from the config, the paths and the facts its runner gathered, and
touches no file; each step's cache key (its exec properties) moves only with the code it runs."""
import builtins
import os
import shutil

import pytest

from mtmoe.core.config import load_config
from mtmoe.pipeline.facts import RunFacts, gather_run_facts
from mtmoe.pipeline.paths import _ROOT, TRAINER_CODE, TRANSFORM_CODE, Paths, code_fingerprint
from mtmoe.pipeline.pipeline import create_pipeline


def _facts(root=_ROOT, **changes):
    return RunFacts(schema_file="/pinned/schema.pbtxt",
                    transform_code=code_fingerprint(TRANSFORM_CODE, root=root),
                    trainer_code=code_fingerprint(TRAINER_CODE, root=root), **changes)


def _properties(pipeline):
    """{node id: its exec properties}, the part of TFX's cache key that the DAG's code decides."""
    return {node.id: {k: v for k, v in node.exec_properties.items()}
            for node in pipeline.components}


def test_building_the_dag_reads_and_writes_nothing(tmp_path, monkeypatch):
    config, paths = load_config(), Paths(data_root=str(tmp_path / "data"),
                                         work_dir=str(tmp_path / "work"))
    facts = _facts(completed_trials=3, data_bytes=1 << 30)

    def no_io(*args, **kwargs):
        raise AssertionError(f"create_pipeline did I/O: {args}")

    for module, name in ((builtins, "open"), (os, "makedirs"), (os, "listdir"), (os, "scandir")):
        monkeypatch.setattr(module, name, no_io)
    pipeline = create_pipeline(config, paths, facts, tuning_only=True)
    monkeypatch.undo()

    properties = _properties(pipeline)
    assert properties["ImportSchemaGen"]["schema_file"] == "/pinned/schema.pbtxt"
    assert properties["Tuner"]["custom_config"].count('"completed_trials": 3') == 1
    assert '"source_fingerprint": "%s"' % facts.transform_code in properties["Transform"]["custom_config"]
    assert not (tmp_path / "work").exists()


def test_the_runner_pins_the_schema_it_gathers(tmp_path):
    paths = Paths(data_root=str(tmp_path / "data"), work_dir=str(tmp_path / "work"))
    facts = gather_run_facts(load_config(), paths, data_bytes=10)
    assert os.path.dirname(facts.schema_file) == os.path.join(paths.pipeline_root, "schemas")
    assert os.path.isfile(facts.schema_file) and facts.completed_trials == 0


@pytest.fixture
def tree(tmp_path):
    for folder in ("mtmoe", "components", "trainer", "serving", "pipeline"):
        shutil.copytree(os.path.join(_ROOT, folder), tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("edited, rerun", [
    ("serving/server.py", set()),
    ("mtmoe/cli.py", set()),
    ("pipeline/report.py", set()),
    ("trainer/layers.py", {"Trainer"}),
    ("components/transform.py", {"Transform"}),   # the Trainer sees it through its input
    ("mtmoe/core/tasks.py", {"Transform", "Trainer"}),
])
def test_a_code_change_changes_the_cache_key_of_the_steps_that_run_it_only(tree, edited, rerun):
    config, paths = load_config(), Paths(data_root="/data", work_dir="/work")
    before = _properties(create_pipeline(config, paths, _facts(tree)))
    with open(tree / edited, "a") as f:
        f.write("\n# edited\n")
    after = _properties(create_pipeline(config, paths, _facts(tree)))
    assert {node for node in before if before[node] != after[node]} == rerun


def test_transform_sees_the_out_of_scope_label_and_not_the_blessing_thresholds(tmp_path):
    """Transform keeps a task's out-of-scope label out of its vocabulary, so the label is in
    Transform's config; thresholds and rejection are not (changing them keeps its cache)."""
    import dataclasses
    import json

    config = load_config()
    paths = Paths(data_root=str(tmp_path / "data"), work_dir=str(tmp_path / "work"))

    def transform_tasks(intent_changes):
        tasks = tuple(dataclasses.replace(t, **intent_changes) if t.name == "intent" else t
                      for t in config.tasks)
        pipeline = create_pipeline(dataclasses.replace(config, tasks=tasks), paths, _facts())
        return json.loads(_properties(pipeline)["Transform"]["custom_config"])["config"]["tasks"]

    labelled = transform_tasks({"out_of_scope_label": "oos"})
    assert labelled[0]["out_of_scope_label"] == "oos"
    assert labelled == transform_tasks({"out_of_scope_label": "oos", "min_value": 0.5,
                                        "reject_below": "auto"})
    assert labelled != transform_tasks({})
