"""Plain-text pieces of the run report, kept free of heavy imports so that `mtmoe report` is quick."""
import math
from typing import List

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def number(value, digits: int = 4) -> str:
    """A score as text; "—" where there is none (None, or NaN: undefined)."""
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows] + [""]


def verdict(report: dict) -> str:
    if report["pushed_model"]:
        return f"Blessed and pushed to `{report['pushed_model']}`."
    if report["blessed"]:
        return "Blessed (not pushed)."
    if report["failures"]:
        return "NOT blessed, nothing pushed: " + "; ".join(report["failures"]) + "."
    return "NOT blessed, nothing pushed."


def headline_table(report: dict) -> List[str]:
    rows = [[h["task"], h["metric"], number(h["eval"]), h["min_value"], number(h["baseline"]),
             "—" if h["change"] is None else f"{h['change']:+.4f}", h["max_drop"],
             {True: "yes", False: "**NO**", None: "—"}[h["passed"]], number(h["test"])] for h in report["headline"]]
    return table(["task", "metric", "eval", "min_value", "baseline", "change", "max_drop", "passed",
                  "test"], rows)


def suggested_thresholds(report: dict) -> List[str]:
    """For a run without a blessed baseline (the first): each task whose eval score, less its
    max_drop (rounded down to 0.01), is above its min_value, as a table row to tighten it to. A
    later model that far below the first is then not pushed, even once the first is gone."""
    rows = []
    for h in report["headline"]:
        if h["eval"] is None:
            continue
        suggested = math.floor((h["eval"] - h["max_drop"]) * 100) / 100
        if suggested > h["min_value"]:
            rows.append([h["task"], h["metric"], number(h["eval"]), h["min_value"], f"{suggested:.2f}"])
    if report["had_baseline"] or not rows:
        return []
    return ["### Suggested thresholds", "",
            "This first model sets the bar: `min_value` at its eval score less `max_drop` keeps a "
            "worse later model from being pushed. In the config's tasks:", ""] + table(
        ["task", "metric", "eval", "min_value now", "suggested min_value"], rows)


def trials_table(trials: List[dict]) -> List[str]:
    """Keras Tuner trials (best first) and reference trainings: searched values, per-task
    validation metrics at the best epoch, and the objective."""
    if not trials:
        return []
    values = list(dict.fromkeys(key for row in trials for key in row["values"]))
    tasks = list(trials[0]["metrics"])

    def cell(value):
        return number(value) if isinstance(value, float) else "—" if value is None else str(value)

    return table(["trial", *values, *tasks, "objective"],
                 [[row["trial"], *[cell(row["values"].get(v)) for v in values],
                   *[cell(row["metrics"][t]) for t in tasks], cell(row["objective"])]
                  for row in trials])
