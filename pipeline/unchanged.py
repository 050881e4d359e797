"""Scheduled runs with nothing new: when the window of spans, the config and the code are those the
serving model was trained on, a run trains nothing and pushes nothing.

Light (no TFX, no TensorFlow): the command line checks this before loading the pipeline. What the
serving model was trained on is recorded when a run pushes (`serving_inputs.json` in the work dir);
the runs skipped for it are appended to `skipped_runs.jsonl`, which `mtmoe history` shows.
"""
import datetime
import hashlib
import json
import os
from typing import List, Optional

from mtmoe.core.formats import existing_spans
from mtmoe.pipeline.paths import TRAINER_CODE, TRANSFORM_CODE, Paths, code_fingerprint

SERVING_INPUTS_FILE = "serving_inputs.json"
SKIPPED_RUNS_FILE = "skipped_runs.jsonl"


def window_spans(config, data_root: str) -> List[int]:
    """The spans a run trains on: the newest `spans.window` on disk (0: all)."""
    spans = existing_spans(data_root)
    return spans[-config.spans.window:] if config.spans.window else spans


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def window_files(config, data_root: str) -> list:
    """[path in its span, bytes, mtime in ns] of every file of the window's spans."""
    files = []
    for span in window_spans(config, data_root):
        root = os.path.join(data_root, f"span-{span}")
        for folder, _, names in sorted(os.walk(root)):
            for name in sorted(names):
                stat = os.stat(os.path.join(folder, name))
                files.append([os.path.relpath(os.path.join(folder, name), root), stat.st_size,
                              stat.st_mtime_ns])
    return files


def inputs_fingerprint(config, paths: Paths) -> dict:
    """What a trained model depends on: the window's spans and their files (name, size, mtime), the
    config (wherever its file lives) with its curated schema, and the code of Transform and the
    Trainer."""
    spans = window_spans(config, paths.data_root)
    files = window_files(config, paths.data_root)
    settings = config.to_dict()
    del settings["source"]
    schema = config.validation.schema
    if os.path.isfile(schema):
        with open(schema) as f:
            settings["validation"]["schema"] = f.read()
    return {"spans": spans, "data": _digest(files), "config": _digest(settings),
            "code": code_fingerprint(TRANSFORM_CODE, TRAINER_CODE)}


def serving_versions(paths: Paths) -> List[int]:
    if not os.path.isdir(paths.serving_dir):
        return []
    return sorted(int(name) for name in os.listdir(paths.serving_dir) if name.isdigit())


def record_pushed(paths: Paths, inputs: dict, run_id: str, version: int) -> None:
    """Notes what the version just pushed was trained on (written whole, or not at all)."""
    path = os.path.join(paths.work_dir, SERVING_INPUTS_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"run_id": run_id, "version": version, "inputs": inputs}, f, indent=1)
    os.replace(path + ".tmp", path)


def serving_unchanged(paths: Paths, inputs: dict) -> Optional[dict]:
    """{run_id, version} of the serving model when it was trained on exactly `inputs`; else None
    (no model pushed yet, something changed, or the newest serving version is another one)."""
    try:
        with open(os.path.join(paths.work_dir, SERVING_INPUTS_FILE)) as f:
            serving = json.load(f)
    except FileNotFoundError:
        return None
    versions = serving_versions(paths)
    if serving["inputs"] != inputs or not versions or versions[-1] != serving["version"]:
        return None
    return serving


def record_skipped(paths: Paths, serving: dict, inputs: dict) -> dict:
    """Appends a skipped run (its id is its start time, like a pipeline run's) and returns it."""
    skipped = {"run_id": datetime.datetime.now().isoformat(), "spans": inputs["spans"],
               "serving_run": serving["run_id"], "version": serving["version"]}
    with open(os.path.join(paths.work_dir, SKIPPED_RUNS_FILE), "a") as f:
        f.write(json.dumps(skipped) + "\n")
    return skipped


def skipped_runs(paths: Paths) -> List[dict]:
    try:
        with open(os.path.join(paths.work_dir, SKIPPED_RUNS_FILE)) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
