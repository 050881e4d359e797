"""The run report: what a pipeline run produced, in one page a person can read.

Everything comes from the run's artifacts: TFMA's metrics and validation result (Evaluator), the test
split's scores and breakdowns (TestScorer), the training history and gate statistics (Trainer), TFDV's
statistics (StatisticsGen) and the anomalies the run was allowed to go on with (DataGate). The page
is written as Markdown, converted to HTML with Python-Markdown, and kept as `report.json` for
`mtmoe report`.
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import markdown
import tensorflow_model_analysis as tfma

from mtmoe.components.data_validation import DATA_GATE, read_statistics

from mtmoe.components.test_scoring import TestMetrics
from mtmoe.core.decay import SERVED_PREFIX, check_line
from mtmoe.core.feature_names import LENGTH_BUCKET, OVERALL
from mtmoe.core.file_names import BREAKDOWN_FILE, GATE_FILE
from mtmoe.core.file_names import HISTORY_FILE
from mtmoe.core.metrics import f1_from_counts, length_bucket_names
from mtmoe.core.tasks import OUT_OF_SCOPE_METRICS, task_type
from mtmoe.pipeline import plots
from mtmoe.pipeline.report_text import (REPORT_HTML, REPORT_JSON, headline_table, number, table,
                                        suggested_thresholds, trials_table, verdict)
from mtmoe.pipeline.statistics_page import statistics_page

REPORT_MD = "report.md"
PLOTS_DIR = "plots"
STATISTICS_HTML = "statistics.html"
CANDIDATE, BASELINE = "candidate", "baseline"


def _read_json(folder: Optional[str], name: str):
    path = os.path.join(folder or "", name)
    if folder is None or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _slice_name(slice_key) -> str:
    parts = []
    for key in slice_key.single_slice_keys:
        value = key.bytes_value.decode() if key.HasField("bytes_value") else \
            key.int64_value if key.HasField("int64_value") else key.float_value
        parts.append(f"{key.column}={value}")
    return ", ".join(parts) or OVERALL


def read_evaluation(uri: str) -> Dict[str, Dict[tuple, float]]:
    """{slice name: {(model, output, metric, is_diff): value}} from the Evaluator's output."""
    values: Dict[str, Dict[tuple, float]] = {}
    for per_slice in tfma.load_metrics(uri):
        entry = values.setdefault(_slice_name(per_slice.slice_key), {})
        for item in per_slice.metric_keys_and_values:
            key = item.key
            model = key.model_name or CANDIDATE
            entry[(model, key.output_name, key.name, key.is_diff)] = item.value.double_value.value
    return values


def _missing(value) -> bool:
    return value is None or value != value  # NaN: TFMA's "no such score" for this model


def _failure_text(task, metric: str, failure) -> str:
    threshold = failure.metric_threshold
    value = failure.metric_value.double_value.value
    if threshold.HasField("change_threshold"):
        return (f"{task.name} {metric} changed {value:+.4f} against the blessed baseline; "
                f"the largest allowed drop is {task.max_drop} (max_drop)")
    return f"{task.name} {metric} is {value:.4f}, below {task.min_value} (min_value)"


def build_report(run_id: str, config, summary: dict, artifacts: Dict[str, Optional[str]],
                 runs: Sequence[dict] = ()) -> dict:
    """The report's content as plain data. `artifacts` maps artifact type names to URIs; `runs`:
    the work dir's history rows up to this run (`mtmoe history`'s), for the serving model's
    scores on each new span."""
    tasks = config.tasks
    by_output = {task_type(t).eval_output(t): t for t in tasks}
    evaluation = read_evaluation(artifacts["ModelEvaluation"]) if artifacts.get("ModelEvaluation") else {}
    validation = (tfma.load_validation_result(artifacts["ModelEvaluation"])
                  if artifacts.get("ModelEvaluation") else None)
    failures = {}
    for per_slice in (validation.metric_validations_per_slice if validation else []):
        for failure in per_slice.failures:
            task = by_output.get(failure.metric_key.output_name)
            if task is not None:
                failures.setdefault(task.name, []).append(
                    _failure_text(task, failure.metric_key.name, failure))
    overall = evaluation.get(OVERALL, {})
    headline = []
    for task in tasks:
        kind = task_type(task)
        metric, output = kind.primary_metric, kind.eval_output(task)
        headline.append({
            "task": task.name, "metric": metric,
            "eval": overall.get((CANDIDATE, output, metric, False)),
            "min_value": task.min_value,
            "baseline": overall.get((BASELINE, output, metric, False)),
            "change": overall.get((CANDIDATE, output, metric, True)),
            "max_drop": task.max_drop,
            "passed": None if not overall else task.name not in failures,
            "test": summary["test_metrics"].get(task.name, {}).get(metric),
            "test_scores": summary["test_metrics"].get(task.name, {}),
        })
    # A baseline exported before a task answered out of scope has no such scores: said once.
    notes = [f"{task.name}: the blessed model has no out-of-scope answers (exported before them); "
             f"compared on {task_type(task).primary_metric} only" for task in tasks
             if task.answers_out_of_scope and _missing(overall.get(
                 (BASELINE, task_type(task).eval_output(task), OUT_OF_SCOPE_METRICS[0], False)))
             and overall.get((BASELINE, task_type(task).eval_output(task),
                              task_type(task).primary_metric, False)) is not None]
    return {
        "run_id": run_id,
        "config": config.source,
        "notes": notes,
        "blessed": summary["blessed"],
        "pushed_model": summary["pushed_model"],
        "had_baseline": bool(validation is not None and not validation.rubber_stamp),
        "failures": [text for task in tasks for text in failures.get(task.name, [])],
        "headline": headline,
        "test_overall_accuracy": summary["test_metrics"].get(OVERALL, {}).get("accuracy"),
        "slices": _length_slices(evaluation, tasks, config.evaluation.length_buckets),
        "breakdowns": _read_json(artifacts.get(TestMetrics.TYPE_NAME), BREAKDOWN_FILE) or {},
        "history": _read_json(artifacts.get("ModelRun"), HISTORY_FILE) or {},
        "gates": summary.get("gate_statistics", {}),
        "data": _data_summary(artifacts.get("ExampleStatistics")),
        "statistics": artifacts.get("ExampleStatistics"),  # StatisticsGen's output folder
        "anomalies": _read_json(artifacts.get(DATA_GATE), GATE_FILE) or {},
        "components": summary.get("components", {}),
        "trials": summary.get("trials", []),
        "loss_weighting": summary.get("loss_weighting"),
        "loss_weights": summary.get("loss_weights"),
        "kept_epoch": summary.get("kept_epoch"),
        "word_vectors": summary.get("word_vectors"),
        "calibration": summary.get("calibration") or {},
        "rejection": summary.get("rejection") or {},
        "served_model": summary.get("served_model"),
        # Runs where the serving model was scored on a new span, with what was trained then.
        "served_runs": [run for run in runs
                        if any(key.startswith(SERVED_PREFIX) for key in run["metrics"])],
    }


def _length_slices(evaluation, tasks, boundaries) -> List[dict]:
    rows = []
    for bucket in length_bucket_names(boundaries):
        values = evaluation.get(f"{LENGTH_BUCKET}={bucket}")
        if values is None:
            continue
        row = {"bucket": bucket}
        for task in tasks:
            kind = task_type(task)
            output = kind.eval_output(task)
            row["examples"] = max(row.get("examples", 0),
                                  int(values.get((CANDIDATE, output, "example_count", False), 0)))
            row[task.name] = values.get((CANDIDATE, output, kind.primary_metric, False))
        rows.append(row)
    return rows


def _data_summary(uri: Optional[str]) -> Dict[str, dict]:
    """Examples per split; every feature's statistics are on their own page (STATISTICS_HTML)."""
    return {split: {"examples": statistics.datasets[0].num_examples}
            for split, statistics in read_statistics(uri).items()}


def _write_statistics_view(uri: Optional[str], config, path: str) -> bool:
    """Every feature's statistics, the train split beside the eval split, the label fields first."""
    statistics = read_statistics(uri)
    if "train" not in statistics:
        return False
    splits = {split: statistics[split] for split in ("train", "eval") if split in statistics}
    with open(path, "w") as f:
        f.write(statistics_page(splits, {task.label_field: task.name for task in config.tasks}))
    return True


def calibration_section(report: dict, config, plot_dir: str) -> List[str]:
    """Each calibrated task's temperature, its ECE and NLL on eval before and after, on test
    after, each out-of-scope rule, and each task's test reliability diagram."""
    fitted = report["calibration"]
    if not fitted:
        return []
    test = {h["task"]: h.get("test_scores") or {} for h in report["headline"]}
    lines = ["## Calibration", "",
             "Each task's probabilities are divided by a temperature fitted on the eval split "
             "(temperature scaling; arg-maxes and 0.5 decisions stay). ECE: expected calibration "
             "error of the top label (a multi-label task: of each label's score), 15 bins; NLL: "
             "negative log-likelihood. Lower is better for both.", ""]
    lines += table(["task", "temperature", "eval ECE before", "eval ECE after", "eval NLL before",
                    "eval NLL after", "test ECE", "test NLL"],
                   [[name, number(fit["temperature"]), number(fit.get("ece_before")),
                     number(fit.get("ece_after")), number(fit.get("nll_before")),
                     number(fit.get("nll_after")),
                     number(test.get(name, {}).get("ece")), number(test.get(name, {}).get("nll"))]
                    for name, fit in fitted.items()])
    for name, rule in report["rejection"].items():
        scores = test.get(name, {})
        lines += [f"{name} answers out of scope below a top in-scope probability of "
                  f"{number(rule['reject_below'])} ({rule['criterion']}): on test, in-scope accuracy "
                  f"{number(scores.get('in_scope_accuracy'))}, out-of-scope recall "
                  f"{number(scores.get('out_of_scope_recall'))}, precision "
                  f"{number(scores.get('out_of_scope_precision'))}.", ""]
    relative = os.path.basename(plot_dir)
    for task in config.tasks:
        bins = report["breakdowns"].get(task.name, {}).get("reliability")
        if bins:
            path = plots.reliability_diagram(bins, f"{task.name}: reliability (test)",
                                             os.path.join(plot_dir, f"reliability_{task.name}.png"))
            lines += [f"![{task.name} reliability diagram]({relative}/{os.path.basename(path)})", ""]
    return lines


def render_markdown(report: dict, config, plot_dir: str, statistics_view: bool = False) -> str:
    """The report as Markdown; draws its figures into `plot_dir` and links them relatively (and
    STATISTICS_HTML beside it, with `statistics_view`)."""
    os.makedirs(plot_dir, exist_ok=True)
    relative = os.path.basename(plot_dir)
    lines = [f"# mtmoe run {report['run_id']}", "", verdict(report), ""]
    if not report["had_baseline"]:
        lines += ["No blessed model existed before this run, so only the value thresholds "
                  "(min_value) applied; change thresholds (max_drop) start with the next run.", ""]
    lines += ["## Metrics per task", "",
              "`eval`: the Evaluator on the eval split, which decides the blessing; `baseline` / "
              "`change`: the latest blessed model on the same data; `test`: the test split, scored "
              "once after the Evaluator.", ""]
    lines += headline_table(report)
    lines += [f"Note: {note}." for note in report.get("notes", [])] + ([""] if report.get("notes") else [])
    lines += suggested_thresholds(report)
    if report["test_overall_accuracy"] is not None:
        lines += [f"Test overall accuracy (every labelled task right): "
                  f"{report['test_overall_accuracy']:.4f}", ""]

    if report["slices"]:
        names = [t.name for t in config.tasks]
        lines += ["## Metrics by text length (eval split)", ""]
        lines += table(["tokens", "examples"] + names,
                       [[row["bucket"], row["examples"]] + [number(row[n]) for n in names]
                        for row in report["slices"]])

    lines += ["## Test split by class", ""]
    for task in config.tasks:
        breakdown = report["breakdowns"].get(task.name)
        if not breakdown or not breakdown["counts"]:
            continue
        if breakdown["kind"] == "confusion":
            path = plots.confusion_matrix(breakdown["counts"], f"{task.name}: confusion (test)",
                                          os.path.join(plot_dir, f"confusion_{task.name}.png"))
            lines += [f"### {task.name}", "", f"![{task.name} confusion matrix]({relative}/"
                      f"{os.path.basename(path)})", ""]
        else:
            rows = []
            for name, counts in sorted(breakdown["counts"].items()):
                scores = f1_from_counts(counts)
                rows.append([name, number(scores["precision"]), number(scores["recall"]),
                             number(scores["f1"]), counts.get("tp", 0) + counts.get("fn", 0)])
            lines += [f"### {task.name}", ""]
            lines += table(["class", "precision", "recall", "F1", "gold"], rows)

    lines += calibration_section(report, config, plot_dir)

    if report["loss_weights"]:
        lines += ["## Loss weights", "",
                  f"Weighting: {report['loss_weighting']}" + (" (learned during training)" if
                                                             report["loss_weighting"] == "uncertainty"
                                                             else ""), ""]
        lines += table(["task", "weight"], [[name, number(weight)] for name, weight
                                            in report["loss_weights"].items()])
    if report["trials"]:
        lines += ["## Tuning", "", "Keras Tuner's trials, best first (validation metrics at each "
                  "trial's best epoch; the objective is the mean of the tasks' primary metrics, or "
                  "the configured weighted mean). The Trainer used the best trial's values.", ""]
        lines += trials_table(report["trials"])

    if report["served_runs"]:
        names = [f"{t.name} {task_type(t).primary_metric}" for t in config.tasks]
        path = plots.served_scores(report["served_runs"], names,
                                   os.path.join(plot_dir, "served_scores.png"))
        served = report["served_model"] or {}
        lines += ["## Serving model on new spans", "",
                  "Before training, each run scores the model that is serving on the new span's "
                  "eval and test examples; a fall below the new models' eval scores is decay.", ""]
        if served.get("findings"):
            lines += [f"This run: {check_line(served)}.", ""]
        lines += [f"![serving model on new spans]({relative}/{os.path.basename(path)})", ""]

    if report["history"]:
        path = plots.training_curves(report["history"], [t.name for t in config.tasks],
                                     {t.name: task_type(t).primary_metric for t in config.tasks},
                                     os.path.join(plot_dir, "training_curves.png"))
        lines += ["## Training", ""]
        kept = report.get("kept_epoch")
        if kept:
            lines += [f"The model keeps the weights of epoch {kept['epoch']} of {kept['epochs_run']}: "
                      f"{kept['reason']} ({number(kept['val_objective'])}).", ""]
        vectors = report.get("word_vectors")
        if vectors:
            lines += [f"The token embedding started from `{vectors['path']}`: {vectors['covered']} "
                      f"of {vectors['vocabulary']} training-vocabulary words had a vector "
                      f"({100 * vectors['hit_rate']:.1f}%).", ""]
        lines += [f"![training curves]({relative}/{os.path.basename(path)})", ""]

    if report["gates"]:
        lines += ["## Experts", "", "Per task gate: the mean gate weight of each routed expert and "
                  "its share of the routed tokens (load), on the eval split.", ""]
        for layer, routers in report["gates"].items():
            path = plots.gate_heatmaps(layer, routers, os.path.join(plot_dir, f"gates_{layer}.png"))
            lines += [f"![{layer} gates]({relative}/{os.path.basename(path)})", ""]

    lines += ["## Data", ""]
    lines += table(["split", "examples"], [[split, stats["examples"]]
                                           for split, stats in report["data"].items()])
    if statistics_view:
        lines += [f"Every feature's statistics, train beside eval: [{STATISTICS_HTML}]"
                  f"({STATISTICS_HTML}) (TFDV's statistics: counts, missing values, value ranges, "
                  f"most frequent values).", ""]
    lines += ["### Validation anomalies", ""]
    if report["anomalies"]:
        lines += ["The span went on with these anomalies (`--allow-anomalies`):", ""]
        lines += [f"- {where}: {anomaly}" for where, found in report["anomalies"].items()
                  for anomaly in found]
    else:
        lines += ["None: the new span passed the schema, label drift and skew checks."]
    lines += [""]

    if report["components"]:
        lines += ["## Component times", ""]
        lines += table(["component", "seconds"],
                       [[name, f"{seconds:.1f}"] for name, seconds in report["components"].items()])
    return "\n".join(lines)


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em}}
img{{max-width:100%}}</style></head>
<body>
{body}
</body></html>
"""


def write_report(report: dict, config, folder: str) -> str:
    """Writes report.json, report.md, report.html, statistics.html and plots/ into `folder`; returns
    the HTML path."""
    os.makedirs(folder, exist_ok=True)
    statistics_view = _write_statistics_view(report["statistics"], config,
                                             os.path.join(folder, STATISTICS_HTML))
    text = render_markdown(report, config, os.path.join(folder, PLOTS_DIR), statistics_view)
    with open(os.path.join(folder, REPORT_MD), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(folder, REPORT_HTML), "w") as f:
        f.write(_PAGE.format(title=f"mtmoe run {report['run_id']}",
                             body=markdown.markdown(text, extensions=["tables"])))
    with open(os.path.join(folder, REPORT_JSON), "w") as f:
        json.dump(report, f, indent=1)
    return os.path.join(folder, REPORT_HTML)
