"""What `schedule.retrain: on_decay` saves on a scheduled run whose new span the serving model
holds on, against today's default (`on_new_data`: a warm-started training on every new span).

A work dir gets its first model from `mtmoe run` on a generated sample (span 1, the packaged
default config); a second sample of the same distribution lands as span 2. Each round copies that
work dir twice and runs `mtmoe run` on span 2 in each copy, one per policy, in alternating order,
timing the whole command (the user's wait).

    python bench/decay.py [--rounds 3] [--examples 2000]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

from machine import write_result
from snips_quality import mtmoe_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "decay")


def _run(*args):
    started = time.monotonic()
    result = subprocess.run(mtmoe_command(*args), capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"mtmoe {' '.join(args)} failed ({result.returncode}):\n"
                         + result.stdout[-3000:] + result.stderr[-3000:])
    return seconds, result.stdout


def _config(policy: str) -> str:
    from mtmoe.core.config import load_config

    raw = yaml.safe_load(open(os.path.join(ROOT, "mtmoe", "configs", "default.yaml")))
    raw["schedule"] = {"retrain": policy}
    raw["validation"]["schema"] = load_config().validation.schema  # the packaged one
    path = os.path.join(WORK, f"{policy}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=2000, help="of each span")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    configs = {policy: _config(policy) for policy in ("on_new_data", "on_decay")}
    data, base = os.path.join(WORK, "data"), os.path.join(WORK, "base")
    for span, seed in ((1, 1), (2, 2)):
        sample = os.path.join(WORK, f"sample{span}")
        _run("data", "sample", "--out", sample, "--num-examples", str(args.examples), "--seed", str(seed))
        _run("data", "convert", "--format", "jsonl", sample, data)
        if span == 1:  # the first model, trained on span 1 alone, serves when span 2 lands
            first, _ = _run("run", "--config", configs["on_new_data"], "--data", data,
                            "--work-dir", base)
    rounds = []
    for index in range(args.rounds):
        order = ("on_new_data", "on_decay") if index % 2 == 0 else ("on_decay", "on_new_data")
        timed = {}
        for policy in order:
            work = os.path.join(WORK, f"round{index}-{policy}")
            shutil.copytree(base, work)  # artifact URIs stay those of base/: read, never written
            timed[policy], out = _run("run", "--config", configs[policy], "--data", data,
                                      "--work-dir", work)
            with open(os.path.join(work, "summary.json")) as f:
                summary = json.load(f)
            served = summary["served_model"]
            timed[f"{policy}_outcome"] = ("held: nothing trained" if not served["retrain"] else
                                          "trained: " + ("pushed" if summary["pushed_model"]
                                                         else "not blessed"))
            timed[f"{policy}_check"] = served.get("findings")
            shutil.rmtree(work)
        timed["ratio"] = timed["on_decay"] / timed["on_new_data"]
        rounds.append(timed)
        print(json.dumps(timed))
    ratios = [r["ratio"] for r in rounds]
    path = write_result("decay", examples_per_span=args.examples, first_run_seconds=first,
                        rounds=rounds, mean_ratio=sum(ratios) / len(ratios),
                        bar="on_decay (served model holds) <= 40% of on_new_data (warm start)")
    print(f"on_decay / on_new_data: {', '.join(f'{r:.2f}' for r in ratios)}; {path}")


if __name__ == "__main__":
    sys.exit(main())
