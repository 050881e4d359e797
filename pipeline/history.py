"""`mtmoe history`: one line per pipeline run, read back from ML Metadata.

Each line: when the run started, the spans it trained on, whether training started from the
blessed model (warm) or from scratch, the Evaluator's value of every task metric
(overall slice, eval split), and what became of the model: blessed and pushed (which version), or
refused (which thresholds failed), a run stopped by data validation or before the Evaluator, or a
run with nothing new to train on (the spans, config and code of the serving model).
"""
from typing import List

import tensorflow_model_analysis as tfma

from mtmoe.components.data_validation import DATA_GATE
from mtmoe.core.feature_names import OVERALL
from mtmoe.core.tasks import task_type
from mtmoe.pipeline.local_runner import TRAINER, pipeline_runs, summarize
from mtmoe.pipeline.report import CANDIDATE, read_evaluation
from mtmoe.pipeline.report_text import table
from mtmoe.pipeline.unchanged import skipped_runs


def _failure(failure) -> str:
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    if threshold.HasField("change_threshold"):
        return (f"{key.output_name} {key.name} changed {value:+.4f} "
                f"(allowed {threshold.change_threshold.absolute.value:+.4f})")
    return f"{key.output_name} {key.name} {value:.4f} < {threshold.value_threshold.lower_bound.value}"


def history_rows(paths, config) -> List[dict]:
    """The runs of this work dir, oldest first, as plain data; metrics are the config's tasks'
    primary metrics."""
    primary = {task.name: (task_type(task).eval_output(task), task_type(task).primary_metric)
               for task in config.tasks}
    rows = []
    for record in pipeline_runs(paths, config.pipeline.name):
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
        pushed = record.property("PushedModel", "pushed") == 1
        if pushed:
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
        started = summarize(record)["warm_start"]
        start = None if started is None else "warm" if started["warm_started"] else "scratch"
        rows.append({"run_id": record.run_id, "spans": record.spans, "start": start,
                     "metrics": metrics, "outcome": outcome, "failures": failures})
    rows += [{"run_id": skipped["run_id"], "spans": skipped["spans"], "start": None, "metrics": {},
              "outcome": f"nothing new: version {skipped['version']} (run {skipped['serving_run']}) "
                         "is serving", "failures": []}
             for skipped in skipped_runs(paths)]
    return sorted(rows, key=lambda row: row["run_id"])


def format_history(rows: List[dict]) -> List[str]:
    names = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    body = [[row["run_id"].replace("T", " ")[:19], ",".join(map(str, row["spans"])) or "-",
             row["start"] or "-",
             *[f"{row['metrics'][n]:.4f}" if n in row["metrics"] else "-" for n in names],
             row["outcome"]] for row in rows]
    return table(["run", "spans", "start", *names, "outcome"], body)
