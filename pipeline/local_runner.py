"""Runs the pipeline with LocalDagRunner and reads what the run produced back from ML Metadata."""
import json
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Dict, List, Optional

import tensorflow_model_analysis as tfma
from absl import logging as absl_logging
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from mtmoe.components.data_validation import DATA_GATE
from mtmoe.components.served_model import ServedModelCheck
from mtmoe.components.test_scoring import TestMetrics
from mtmoe.core.decay import SERVED_PREFIX, check_line
from mtmoe.core.errors import StepFailed, UserError
from mtmoe.core.feature_names import OVERALL
from mtmoe.core.file_names import (GATES_FILE, HISTORY_FILE, METRICS_FILE, SERVED_CHECK_FILE,
                                    SERVED_MODEL_NAME, TENSORBOARD_DIR, TRAINING_FILE)
from mtmoe.core.tasks import task_type
from mtmoe.pipeline.facts import gather_run_facts
from mtmoe.pipeline.history import recorded_runs, write_runs
from mtmoe.pipeline.paths import Paths
from mtmoe.pipeline.pipeline import create_ingest_pipeline, create_pipeline, sqlite_metadata
from mtmoe.pipeline.report import CANDIDATE, build_report, read_evaluation, write_report
from mtmoe.pipeline.spans import SPAN_PROPERTY_NAME
from mtmoe.pipeline.unchanged import record_pushed, window_files, window_spans
from mtmoe.serving.deploy import write_deployment_files
from mtmoe.trainer.tuning import reference_configs, reference_row, trial_table

SUMMARY_FILE = "summary.json"
TRAINER = "Trainer"
EXAMPLE_GEN = "ImportExampleGen"
TRANSFORM = "Transform"
# {name the run report reads it by: (artifact type, producing node)}.
_REPORTED = {"ModelEvaluation": ("ModelEvaluation", "Evaluator"),
             TestMetrics.TYPE_NAME: (TestMetrics.TYPE_NAME, "TestScorer"),
             "ModelRun": ("ModelRun", TRAINER),
             "ExampleStatistics": ("ExampleStatistics", "StatisticsGen"),
             DATA_GATE: ("ExampleStatistics", DATA_GATE)}
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_PROGRESS = re.compile(r"^Component (\S+) is (running|finished)\.$")
_SKIPPED = re.compile(r"^Skipping execution for (\S+)$")  # a Cond that does not hold


class _ComponentProgress(logging.Handler):
    """One console line per step as LocalDagRunner logs 'Component X is running/finished.', with
    the time ML Metadata recorded for the step's execution; none for a step a Cond skipped."""

    def __init__(self, echo, paths: Paths, pipeline_name: str):
        super().__init__(level=logging.INFO)
        self.echo, self.paths, self.pipeline_name = echo, paths, pipeline_name
        self.running: List[str] = []
        self.skipped = set()

    def emit(self, record):
        message = record.getMessage()
        skipped = _SKIPPED.match(message)
        if skipped:
            self.skipped.add(skipped.group(1))
        match = _PROGRESS.match(message)
        if not match:
            return
        node, state = match.groups()
        if state == "running":
            self.running.append(node)
            return
        self.running.remove(node)
        if node in self.skipped:
            return
        seconds = _latest_execution_seconds(read_only_store(self.paths), self.pipeline_name, node)
        self.echo(f"   {node} done" + ("" if seconds is None else f" in {seconds:.1f} s"))


def _execution_seconds(execution) -> float:
    """From registration (inputs resolved) to publication (outputs recorded), as ML Metadata has it."""
    return round((execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000, 2)


def _latest_execution_seconds(store, pipeline_name: str, node: str) -> Optional[float]:
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
    executions = store.get_executions_by_context(context.id) if context else []
    return _execution_seconds(max(executions, key=lambda e: e.id)) if executions else None


def run_pipeline(config, paths: Paths, echo=print, tuning_only: bool = False,
                 compare_weightings: bool = False, allow_anomalies: bool = False,
                 inputs: Optional[dict] = None, force: bool = False) -> dict:
    """Runs every component in order (or those up to the Tuner); returns the run summary.

    A full run also writes summary.json and the run report, and when it pushes, notes what the
    pushed model was trained on (`inputs`, from `unchanged.inputs_fingerprint` before the run).
    Every run, however it ends, adds its line to the work dir's history (`record_runs`).
    """
    progress = _ComponentProgress(echo, paths, config.pipeline.name)
    # TFX's and TensorFlow's absl records, INFO included, to stderr: the run's log (mtmoe.core.console).
    log_handler = logging.StreamHandler(sys.stderr)
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    absl_logger = logging.getLogger("absl")
    previous = absl_logging.get_verbosity(), absl_logger.propagate
    # TensorFlow resets the absl logger's level to absl's verbosity while it saves models, so the
    # verbosity itself must be INFO for the progress lines to see every component.
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger.propagate = False
    absl_logger.addHandler(progress)
    absl_logger.addHandler(log_handler)
    try:
        data_bytes = sum(size for _, size, _ in window_files(config, paths.data_root))
        facts = gather_run_facts(config, paths, data_bytes)
        for span in spans_to_ingest(config, paths):
            echo(f"ingesting span {span} for the window of spans")
            LocalDagRunner().run(
                create_ingest_pipeline(config, paths, span, data_bytes))
        LocalDagRunner().run(
            create_pipeline(config, paths, facts, tuning_only, compare_weightings,
                            allow_anomalies=allow_anomalies, force=force))
    except UserError:
        raise
    except Exception as e:  # the traceback is in the log; the console gets the step and the error
        traceback.print_exc()  # into the log (the command's stderr)
        step = progress.running[-1] if progress.running else "the pipeline"
        raise StepFailed(f"{step} failed: {type(e).__name__}: {e}") from e
    finally:
        for handler in (progress, log_handler):
            absl_logger.removeHandler(handler)
        absl_logging.set_verbosity(previous[0])
        absl_logger.propagate = previous[1]
        record_runs(paths, config)
    record = latest_run(paths, config.pipeline.name)
    trials = trial_rows(record, config, paths) if config.tuning.enabled or tuning_only else []
    if tuning_only:
        return {"run_id": record.run_id, "components": record.seconds, "trials": trials}
    summary = summarize(record)
    summary["trials"] = trials
    served = summary["served_model"]
    if served and not served["retrain"]:  # on_decay, and the serving model holds: nothing trained
        _write_summary(paths, summary)
        if inputs is not None:  # the serving version stands for these inputs: a re-run skips
            record_pushed(paths, inputs, record.run_id, served["version"])
        return summary
    report = build_report(record.run_id, config, summary,
                          {name: record.uri(*source) for name, source in _REPORTED.items()},
                          recorded_runs(paths) or [])
    summary["failures"] = report["failures"]
    summary["notes"] = report["notes"]
    summary["report"] = write_report(report, config, paths.report_dir(record.run_id))
    summary["serving_config"] = write_deployment_files(paths.serving_config_dir, SERVED_MODEL_NAME)
    _write_summary(paths, summary)
    if inputs is not None and summary["pushed_model"]:
        record_pushed(paths, inputs, record.run_id, int(os.path.basename(summary["pushed_model"])))
    return summary


def _write_summary(paths: Paths, summary: dict) -> None:
    with open(os.path.join(paths.work_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=1)


def trial_rows(record, config, paths: Paths) -> list:
    """The search's trials, best first, then the reference trainings this run made (if any)."""
    rows = trial_table(paths.tuning_dir, config)
    for name in reference_configs(config):
        model_run = record.uri("ModelRun", f"Trainer_{name}")
        if model_run is not None:
            rows.append(reference_row(name, _read_json(model_run, HISTORY_FILE),
                                      _read_json(model_run, TRAINING_FILE), config))
    return rows


def _read_json(folder: str, name: str):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def spans_to_ingest(config, paths: Paths) -> List[int]:
    """The window's spans, other than the newest (this run's ExampleGen takes it), that no earlier
    run has ingested: spans written before the first run, or several between two runs."""
    older = window_spans(config, paths.data_root)[:-1]
    if not older or not os.path.exists(paths.metadata):
        return older
    store = read_only_store(paths)
    node = store.get_context_by_type_and_name("node", f"{config.pipeline.name}.{EXAMPLE_GEN}")
    ingested = set() if node is None else {
        _property(a, SPAN_PROPERTY_NAME) for a in store.get_artifacts_by_context(node.id)}
    return [span for span in older if span not in ingested]


def read_only_store(paths: Paths) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(sqlite_metadata(paths.metadata, read_only=True))


def _node_artifacts(store, run_context_id: int, pipeline_name: str):
    """({node id: {artifact type name: [artifacts]}} of outputs, the same of inputs, {node id:
    execution seconds}) for the executions of one pipeline run."""
    types = {t.id: t.name for t in store.get_artifact_types()}
    outputs: Dict[str, Dict[str, list]] = {}
    inputs: Dict[str, Dict[str, list]] = {}
    seconds: Dict[str, float] = {}
    for execution in sorted(store.get_executions_by_context(run_context_id), key=lambda e: e.id):
        node = next((c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id)
                     if c.name.startswith(pipeline_name + ".")), None)
        if node is None:
            continue
        seconds[node] = _execution_seconds(execution)
        events = store.get_events_by_execution_ids([execution.id])
        for found, kinds in ((outputs, _OUTPUT_EVENTS), (inputs, _INPUT_EVENTS)):
            ids = [e.artifact_id for e in events if e.type in kinds]
            for artifact in store.get_artifacts_by_id(ids):
                found.setdefault(node, {}).setdefault(types[artifact.type_id], []).append(artifact)
        outputs.setdefault(node, {})
    return outputs, inputs, seconds


def _property(artifact, name: str):
    value = artifact.custom_properties.get(name)
    if value is None:
        return None
    return value.int_value if value.HasField("int_value") else value.string_value


@dataclass(frozen=True)
class RunRecord:
    """One pipeline run as ML Metadata recorded it: its id and each node's latest output per type."""

    run_id: str
    outputs: Dict[str, Dict[str, object]]
    spans: List[int]  # of the examples Transform read (or ExampleGen ingested, if it stopped before)
    seconds: Dict[str, float]  # each step's execution time, in the order the steps ran

    def artifact(self, type_name: str, node: Optional[str] = None):
        found = [artifacts[type_name] for name, artifacts in self.outputs.items()
                 if type_name in artifacts and node in (None, name)]
        return found[-1] if found else None

    def uri(self, type_name: str, node: Optional[str] = None) -> Optional[str]:
        artifact = self.artifact(type_name, node)
        return None if artifact is None else artifact.uri

    def property(self, type_name: str, name: str):
        artifact = self.artifact(type_name)
        return None if artifact is None else _property(artifact, name)


def _record(store, run, pipeline_name: str) -> RunRecord:
    outputs, inputs, seconds = _node_artifacts(store, run.id, pipeline_name)
    latest = {node: {type_name: found[-1] for type_name, found in by_type.items()}
              for node, by_type in outputs.items()}
    # The spans Transform read; for a run stopped before it, the span ExampleGen ingested.
    examples = (inputs.get(TRANSFORM, {}).get("Examples")
                or outputs.get(EXAMPLE_GEN, {}).get("Examples", []))
    return RunRecord(run.name, latest, sorted({_property(a, SPAN_PROPERTY_NAME) for a in examples}),
                     seconds)


def _runs(store):
    return sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)


def latest_run(paths: Paths, pipeline_name: str) -> RunRecord:
    store = read_only_store(paths)
    runs = _runs(store)
    if not runs:
        raise RuntimeError(f"{paths.metadata}: no pipeline run recorded")
    return _record(store, runs[-1], pipeline_name)


def pipeline_runs(paths: Paths, pipeline_name: str) -> List[RunRecord]:
    """Every run that got past ingestion, oldest first (ingest-only runs are left out)."""
    if not os.path.exists(paths.metadata):
        return []
    store = read_only_store(paths)
    records = [_record(store, run, pipeline_name) for run in _runs(store)]
    return [record for record in records if set(record.outputs) - {EXAMPLE_GEN}]


def served_check(record: RunRecord) -> Optional[dict]:
    """The served-model check of the run's new span (components.served_model), if it ran."""
    folder = record.uri(ServedModelCheck.TYPE_NAME)
    return _read_json(folder, SERVED_CHECK_FILE) if folder else None


def summarize(record: RunRecord) -> dict:
    test_metrics = record.uri(TestMetrics.TYPE_NAME)
    metrics = _read_json(test_metrics, METRICS_FILE) if test_metrics else {}
    model_run = record.uri("ModelRun", TRAINER)
    gates = _read_json(model_run, GATES_FILE) if model_run else {}
    training = _read_json(model_run, TRAINING_FILE) if model_run else {}
    pushed = None
    if record.property("PushedModel", "pushed") == 1:
        pushed = record.property("PushedModel", "pushed_destination")
    return {
        "run_id": record.run_id,
        "components": record.seconds,
        "test_metrics": metrics,
        "blessed": record.property("ModelBlessing", "blessed") == 1,
        "pushed_model": pushed,
        "gate_statistics": gates,
        "loss_weighting": training.get("loss_weighting"),
        "loss_weights": training.get("loss_weights"),
        "spans": record.spans,
        "warm_start": training.get("warm_start"),
        "kept_epoch": training.get("kept_epoch"),
        "epoch_seconds": training.get("epoch_seconds"),
        "parameters": training.get("parameters"),
        "word_vectors": training.get("word_vectors"),
        "calibration": training.get("calibration"),
        "rejection": training.get("rejection"),
        "tensorboard": os.path.join(model_run, TENSORBOARD_DIR) if model_run else None,
        "served_model": served_check(record),
    }


def record_runs(paths: Paths, config) -> None:
    """Adds to `runs.jsonl` (`mtmoe history`) the line of every run ML Metadata has and the file
    lacks: the run just ended, one killed before it could add its own, and on a work dir from before
    the file, all earlier ones."""
    recorded = recorded_runs(paths) or []
    known = {row["run_id"] for row in recorded}
    new = [history_row(record, config) for record in pipeline_runs(paths, config.pipeline.name)
           if record.run_id not in known]
    if new:
        write_runs(paths, recorded + new)


def _failure(failure) -> str:
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    if threshold.HasField("change_threshold"):
        return (f"{key.output_name} {key.name} changed {value:+.4f} "
                f"(allowed {threshold.change_threshold.absolute.value:+.4f})")
    return f"{key.output_name} {key.name} {value:.4f} < {threshold.value_threshold.lower_bound.value}"


def history_row(record: RunRecord, config) -> dict:
    """A run's line of `mtmoe history` as plain data; its metrics are the config's tasks' primary
    metrics."""
    primary = {task.name: (task_type(task).eval_output(task), task_type(task).primary_metric)
               for task in config.tasks}
    evaluation = record.uri("ModelEvaluation")
    metrics, failures = {}, []
    if evaluation:
        overall = read_evaluation(evaluation).get(OVERALL, {})
        metrics = {f"{name} {metric}": overall[(CANDIDATE, output, metric, False)]
                   for name, (output, metric) in primary.items()
                   if (CANDIDATE, output, metric, False) in overall}
        validation = tfma.load_validation_result(evaluation)
        failures = [_failure(failure) for per_slice in validation.metric_validations_per_slice
                    for failure in per_slice.failures]
    check = served_check(record)
    if check:  # the serving model's primary scores on the new span (eval and test)
        metrics.update({f"{SERVED_PREFIX}{name} {metric}": value
                        for name, (_, metric) in primary.items()
                        if (value := check.get("primary", {}).get(name)) is not None})
    if check and not check["retrain"]:
        outcome = check_line(check)
    elif record.property("PushedModel", "pushed") == 1:
        outcome = f"blessed, pushed version {record.property('PushedModel', 'pushed_version')}"
    elif record.property("ModelBlessing", "blessed") == 1:
        outcome = "blessed, not pushed"
    elif evaluation:
        outcome = "NOT blessed: " + "; ".join(failures)
    elif TRAINER not in record.outputs and any(n.startswith(TRAINER) for n in record.outputs):
        outcome = "tuning run (mtmoe tune)"
    elif DATA_GATE in record.outputs and not record.outputs[DATA_GATE]:
        outcome = "stopped by data validation"
    else:
        outcome = "stopped before the Evaluator"
    if check and check["decayed"] and evaluation and record.property("ModelBlessing", "blessed") != 1:
        outcome = f"LOOK AT THIS: {check_line(check)}; and the new model is {outcome}"
    started = summarize(record)["warm_start"]
    start = None if started is None else "warm" if started["warm_started"] else "scratch"
    return {"run_id": record.run_id, "spans": record.spans, "start": start, "metrics": metrics,
            "outcome": outcome, "failures": failures}
