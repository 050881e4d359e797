"""Runs the pipeline with LocalDagRunner and reads what the run produced back from ML Metadata."""
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Dict, Optional

from absl import logging as absl_logging
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.test_scoring import METRICS_FILE
from pipeline.pipeline import Paths, create_pipeline
from pipeline.report import build_report, write_report
from trainer.module import GATES_FILE

SUMMARY_FILE = "summary.json"
_PROGRESS = re.compile(r"^Component (\S+) is (running|finished)\.$")


class _ComponentTimer(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished.' log lines into progress and timings."""

    def __init__(self, echo):
        super().__init__(level=logging.INFO)
        self.echo = echo
        self.started: Dict[str, float] = {}
        self.seconds: Dict[str, float] = {}

    def emit(self, record):
        match = _PROGRESS.match(record.getMessage())
        if not match:
            return
        node, state = match.groups()
        if state == "running":
            self.started[node] = time.monotonic()
            self.echo(f"-> {node}")
        else:
            self.seconds[node] = round(time.monotonic() - self.started.pop(node), 2)
            self.echo(f"   {node} done in {self.seconds[node]:.1f} s")


def run_pipeline(config, paths: Paths, echo=print) -> dict:
    """Runs every component in order; returns (and writes) the run summary."""
    timer = _ComponentTimer(echo)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    absl_logger = logging.getLogger("absl")
    previous = absl_logging.get_verbosity(), absl_logger.propagate
    # TensorFlow resets the absl logger's level to absl's verbosity while it saves models, so the
    # verbosity itself must be INFO for the timer to see every component; only warnings are printed.
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger.propagate = False
    absl_logger.addHandler(timer)
    absl_logger.addHandler(warnings)
    try:
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config, paths))
    finally:
        for handler in (timer, warnings):
            absl_logger.removeHandler(handler)
        absl_logging.set_verbosity(previous[0])
        absl_logger.propagate = previous[1]
    record = latest_run(paths, config.pipeline.name)
    summary = summarize(record)
    summary["components"] = timer.seconds
    report = build_report(record.run_id, config, summary,
                          {name: record.uri(name) for name in record.artifacts})
    summary["failures"] = report["failures"]
    summary["report"] = write_report(report, config, paths.report_dir(record.run_id))
    with open(os.path.join(paths.work_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _store(paths: Paths) -> metadata_store.MetadataStore:
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = paths.metadata
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(connection)


def _node_outputs(store, run_context_id: int, pipeline_name: str):
    """{node id: {artifact type name: [artifacts]}} for the executions of one pipeline run."""
    types = {t.id: t.name for t in store.get_artifact_types()}
    outputs: Dict[str, Dict[str, list]] = {}
    for execution in store.get_executions_by_context(run_context_id):
        node = next((c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id)
                     if c.name.startswith(pipeline_name + ".")), None)
        if node is None:
            continue
        events = [e for e in store.get_events_by_execution_ids([execution.id])
                  if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)]
        for artifact in store.get_artifacts_by_id([e.artifact_id for e in events]):
            outputs.setdefault(node, {}).setdefault(types[artifact.type_id], []).append(artifact)
        outputs.setdefault(node, {})
    return outputs


def _property(artifact, name: str):
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    return value.int_value if value.HasField("int_value") else value.string_value


@dataclass(frozen=True)
class RunRecord:
    """One pipeline run as ML Metadata recorded it: its id and its latest output artifact per type."""

    run_id: str
    artifacts: Dict[str, object]

    def uri(self, type_name: str) -> Optional[str]:
        artifact = self.artifacts.get(type_name)
        return None if artifact is None else artifact.uri

    def property(self, type_name: str, name: str):
        artifact = self.artifacts.get(type_name)
        return None if artifact is None else _property(artifact, name)


def latest_run(paths: Paths, pipeline_name: str) -> RunRecord:
    store = _store(paths)
    runs = [c for c in store.get_contexts_by_type("pipeline_run")]
    if not runs:
        raise RuntimeError(f"{paths.metadata}: no pipeline run recorded")
    run = max(runs, key=lambda c: c.create_time_since_epoch)
    artifacts = {}
    for node in _node_outputs(store, run.id, pipeline_name).values():
        for type_name, found in node.items():
            artifacts[type_name] = found[-1]
    return RunRecord(run.name, artifacts)


def summarize(record: RunRecord) -> dict:
    metrics = {}
    if record.uri("MtmoeTestMetrics") is not None:
        with open(os.path.join(record.uri("MtmoeTestMetrics"), METRICS_FILE)) as f:
            metrics = json.load(f)
    gates = {}
    model_run = record.uri("ModelRun")
    if model_run is not None and os.path.exists(os.path.join(model_run, GATES_FILE)):
        with open(os.path.join(model_run, GATES_FILE)) as f:
            gates = json.load(f)
    pushed = None
    if record.property("PushedModel", "pushed") == 1:
        pushed = record.property("PushedModel", "pushed_destination")
    return {
        "run_id": record.run_id,
        "components": {},
        "test_metrics": metrics,
        "blessed": record.property("ModelBlessing", "blessed") == 1,
        "pushed_model": pushed,
        "gate_statistics": gates,
    }
