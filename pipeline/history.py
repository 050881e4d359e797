"""`mtmoe history`: one line per pipeline run, read from files the runs write, so that it loads no
TensorFlow.

Each line: when the run started, the spans it trained on, whether training started from the
blessed model (warm) or from scratch, the Evaluator's value of every task metric
(overall slice, eval split), and what became of the model: blessed and pushed (which version), or
refused (which thresholds failed), a run stopped by data validation or before the Evaluator, or a
run with nothing new to train on (the spans, config and code of the serving model).

`mtmoe run` and `mtmoe tune` end, however they end, by adding to `runs.jsonl` the line of every run
ML Metadata has and the file lacks (local_runner.record_runs): their own, one killed before it
could add its own (it shows once the next run ends), and on a work dir from before the file, all
earlier ones. Runs skipped with nothing new are in `skipped_runs.jsonl`.
"""
import json
import os
from typing import List, Optional

from mtmoe.pipeline.paths import Paths
from mtmoe.pipeline.report_text import table
from mtmoe.pipeline.unchanged import skipped_runs

RUNS_FILE = "runs.jsonl"


def recorded_runs(paths: Paths) -> Optional[List[dict]]:
    """The lines of `runs.jsonl`, or None for a work dir whose runs have not written it (none yet,
    or all from before it)."""
    try:
        with open(os.path.join(paths.work_dir, RUNS_FILE)) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return None


def write_runs(paths: Paths, rows: List[dict]) -> None:
    """Writes `runs.jsonl` whole, or not at all."""
    path = os.path.join(paths.work_dir, RUNS_FILE)
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(path + ".tmp", path)


def with_skipped(paths: Paths, rows: List[dict]) -> List[dict]:
    """The pipeline runs' `rows` and the runs skipped with nothing new, oldest first."""
    rows = rows + [{"run_id": skipped["run_id"], "spans": skipped["spans"], "start": None,
                    "metrics": {}, "outcome": f"nothing new: version {skipped['version']} (run "
                                              f"{skipped['serving_run']}) is serving", "failures": []}
                   for skipped in skipped_runs(paths)]
    return sorted(rows, key=lambda row: row["run_id"])


def format_history(rows: List[dict]) -> List[str]:
    names = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    body = [[row["run_id"].replace("T", " ")[:19], ",".join(map(str, row["spans"])) or "-",
             row["start"] or "-",
             *[f"{row['metrics'][n]:.4f}" if n in row["metrics"] else "-" for n in names],
             row["outcome"]] for row in rows]
    return table(["run", "spans", "start", *names, "outcome"], body)
