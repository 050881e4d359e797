"""Quality on SNIPS: test intent accuracy, slot span F1 (conlleval) and overall (sentence) accuracy of
the real pipeline, over several training seeds, next to published joint models without a pretrained LM.

    python bench/snips_quality.py [--data ../shared/data/snips] [--config mtmoe/configs/snips.yaml]
                                  [--seeds 42 43 44] [--epochs N] [--work-dir bench/work/snips]
                                  [--baseline-seeds 42 ...]

Converts the SNIPS-format folder (`{train,dev,test}/{seq.in,seq.out,label}`) once with
`mtmoe data convert --format slu`, then per seed runs `mtmoe run` on a copy of the config with
`training.seed` set (and warm start off, so that every seed trains from scratch). All seeds share one
work dir, so Transform runs once. Test metrics are the TestScorer's (the test split is scored once,
after the Evaluator); overall accuracy counts a sentence right when its intent and every slot tag are
right. Trainer wall time per seed is the Trainer component's time in the run summary; per-epoch
training seconds, the epoch kept (best on dev) and the parameter count come from the Trainer's
training record.

In the same run, per seed, the plain Keras script of bench/baseline_bilstm.py (word embedding + char
CNN, one BiLSTM, early stopping on dev) trains on the same data, so that the ratio of our epoch time
to its epoch time is measured on the same machine at the same time. Writes
bench/results/snips_quality.json with the machine, the versions and the command.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import yaml

from machine import RESULTS, write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(os.path.dirname(RESULTS), "work", "snips")
PUBLISHED = os.path.join(ROOT, "..", "shared", "reference", "published_slu_results.csv")
# (task, metric in the run summary, column) of the three numbers SLU papers report.
METRICS = (("intent", "accuracy", "intent_acc"), ("slots", "span_f1", "slot_f1"),
           ("overall", "accuracy", "overall_acc"))
# The bar: the best non-pretrained SNIPS row that a public reproduction (not only a paper) reports.
TARGET = "OpenSLU Stack-Propagation (reproduced)"
BUDGET_S = 30 * 60


def mtmoe_command(*args):
    return [os.path.join(os.path.dirname(sys.executable), "mtmoe"), *args]


def convert(data: str, work_dir: str, config: str) -> str:
    """The SLU folder as a span under `work_dir`/data, converted once (a span is never overwritten)."""
    root = os.path.join(work_dir, "data")
    if not os.path.isdir(os.path.join(root, "span-1")):
        subprocess.run(mtmoe_command("data", "convert", "--format", "slu", data, root,
                                     "--config", config), check=True)
    return root


def config_copy(config: str, path: str, tasks=None, model=None, **training) -> str:
    """Writes `config` with `training` (and `model`) fields replaced, and only `tasks` if given, to
    `path`; the copy keeps validating against the original's schema."""
    from mtmoe.core.config import load_config

    with open(config) as f:
        raw = yaml.safe_load(f)
    raw.setdefault("training", {}).update(training)
    raw.setdefault("model", {}).update(model or {})
    raw.setdefault("validation", {})["schema"] = load_config(config).validation.schema
    if tasks is not None:
        raw["tasks"] = [t for t in raw["tasks"] if t["name"] in tasks]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


def run_baseline(data: str, seed: int, log: str) -> dict:
    """bench/baseline_bilstm.py in its own process (it sets its own threads and seed)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_bilstm.py")
    with open(log, "w") as err:
        out = subprocess.run([sys.executable, script, "--data", data, "--seed", str(seed)],
                             check=True, stdout=subprocess.PIPE, stderr=err, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_pipeline(config: str, data_root: str, work_dir: str, epochs=None, log=None,
                 options=()) -> dict:
    """`mtmoe run` (with `options`); returns its summary.json, with the whole command's seconds as
    `total_s`."""
    command = mtmoe_command("run", "--config", config, "--data", data_root, "--work-dir", work_dir,
                            *options)
    if epochs:
        command += ["--epochs", str(epochs)]
    start = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT)
    with open(os.path.join(work_dir, "summary.json")) as f:
        summary = json.load(f)
    summary["total_s"] = round(time.perf_counter() - start, 1)
    return summary


def published_rows(path: str, dataset: str = "SNIPS"):
    with open(path) as f:
        return [row for row in csv.DictReader(f)
                if row["dataset"] == dataset and row["pretrained_lm"] == "no"]


def spread(values):
    """mean, sample standard deviation, min and max."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "snips"),
                        help="SNIPS-format folder: {train,dev,test}/{seq.in,seq.out,label}")
    parser.add_argument("--config", default=os.path.join(ROOT, "mtmoe", "configs", "snips.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=int, help="override training.epochs (a reduced run)")
    parser.add_argument("--work-dir", default=WORK)
    parser.add_argument("--published", default=PUBLISHED)
    parser.add_argument("--baseline-seeds", type=int, nargs="*",
                        help="seeds the plain Keras script trains with (default: --seeds; none: "
                             "no baseline)")
    args = parser.parse_args()

    # Read before an hour of training, so that a missing file stops the run, not its summary.
    if not os.path.isfile(args.published):
        parser.error(f"--published {args.published}: no such file (published SNIPS rows, CSV)")
    published = published_rows(args.published)
    target = next(r for r in published if r["model"] == TARGET)
    data_root = convert(args.data, args.work_dir, args.config)
    work_dir = os.path.join(args.work_dir, "pipeline-work")
    shutil.rmtree(work_dir, ignore_errors=True)  # a cached Trainer would time nothing
    baseline_seeds = args.seeds if args.baseline_seeds is None else args.baseline_seeds
    runs = []
    for seed in args.seeds:
        config = config_copy(args.config, os.path.join(args.work_dir, "configs", f"seed-{seed}.yaml"),
                             seed=seed, warm_start=False)
        print(f"seed {seed}: mtmoe run (log: {args.work_dir}/seed-{seed}.log)", flush=True)
        summary = run_pipeline(config, data_root, work_dir, args.epochs, os.path.join(args.work_dir, f"seed-{seed}.log"))
        test = summary["test_metrics"]
        run = {"seed": seed, "run_id": summary["run_id"],
               **{column: 100 * test[task][metric] for task, metric, column in METRICS},
               "trainer_s": summary["components"]["Trainer"], "pipeline_s": summary["total_s"],
               "epoch_s": summary["epoch_seconds"], "kept_epoch": summary["kept_epoch"],
               "parameters": summary["parameters"]}
        if seed in baseline_seeds:
            print(f"seed {seed}: baseline script (log: {args.work_dir}/baseline-{seed}.log)", flush=True)
            result = run_baseline(args.data, seed, os.path.join(args.work_dir, f"baseline-{seed}.log"))
            run["baseline"] = {"slot_f1": 100 * result["slot_f1"],
                               "intent_acc": 100 * result["intent_accuracy"],
                               "overall_acc": 100 * result["overall_accuracy"],
                               "epoch_s": result["epoch_seconds"], "kept_epoch": result["best_epoch"],
                               "parameters": result["parameters"]}
        runs.append(run)
        print(f"  {json.dumps(run)}", flush=True)

    ours = {column: spread([r[column] for r in runs]) for _, _, column in METRICS}
    trainer_s = spread([r["trainer_s"] for r in runs])
    epoch_s = statistics.median(s for r in runs for s in r["epoch_s"])
    baseline = None
    with_baseline = [r["baseline"] for r in runs if "baseline" in r]
    if with_baseline:
        baseline = {column: spread([b[column] for b in with_baseline]) for _, _, column in METRICS}
        baseline["epoch_s"] = statistics.median(s for b in with_baseline for s in b["epoch_s"])
        baseline["seeds"] = [r["seed"] for r in runs if "baseline" in r]
    meets = {column: ours[column]["mean"] >= float(target[column]) for _, _, column in METRICS}
    with open(os.path.join(args.work_dir, "configs", f"seed-{args.seeds[0]}.yaml")) as f:
        epochs = args.epochs or yaml.safe_load(f)["training"]["epochs"]

    name = f"mtmoe (this run, {len(runs)} seeds, mean ± std)"
    print(f"\n{args.data}: test split, {len(runs)} seed(s) ({', '.join(map(str, args.seeds))}), "
          f"{epochs} epoch(s)\n")
    print("| model | slot F1 | intent acc | overall acc |\n|---|---|---|---|")
    for row in published:
        print(f"| {row['model']} | {row['slot_f1']} | {row['intent_acc']} | {row['overall_acc']} |")
    columns = ("slot_f1", "intent_acc", "overall_acc")
    if baseline:
        print(f"| plain Keras BiLSTM script (bench/baseline_bilstm.py, this run, seeds "
              f"{', '.join(map(str, baseline['seeds']))}) | "
              + " | ".join(f"{baseline[c]['mean']:.1f} ± {baseline[c]['std']:.1f}" for c in columns)
              + " |")
    print(f"| **{name}** | " + " | ".join(
        f"**{ours[c]['mean']:.1f} ± {ours[c]['std']:.1f}**" for c in columns) + " |")
    print("\nper seed:\n| seed | slot F1 | intent acc | overall acc | Trainer s | s per epoch "
          "(median) | epoch kept / run | parameters |\n|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['seed']} | {r['slot_f1']:.2f} | {r['intent_acc']:.2f} | {r['overall_acc']:.2f} | "
              f"{r['trainer_s']:.0f} | {statistics.median(r['epoch_s']):.1f} | "
              f"{r['kept_epoch']['epoch']} / {r['kept_epoch']['epochs_run']} | {r['parameters']:,} |")
        if "baseline" in r:
            b = r["baseline"]
            print(f"| {r['seed']} (script) | {b['slot_f1']:.2f} | {b['intent_acc']:.2f} | "
                  f"{b['overall_acc']:.2f} | {sum(b['epoch_s']):.0f} | "
                  f"{statistics.median(b['epoch_s']):.1f} | {b['kept_epoch']} / {len(b['epoch_s'])} | "
                  f"{b['parameters']:,} |")
    print(f"\nTrainer wall time per seed: mean {trainer_s['mean']:.0f} s, max {trainer_s['max']:.0f} s "
          f"(budget {BUDGET_S} s on {os.cpu_count()} cores)")
    if baseline:
        print(f"training seconds per epoch (median): ours {epoch_s:.1f}, script "
              f"{baseline['epoch_s']:.1f}, ratio {epoch_s / baseline['epoch_s']:.2f}")
    print(f"at or above {TARGET} (mean over seeds): "
          + ", ".join(f"{c} {'yes' if ok else 'NO'}" for c, ok in meets.items()))

    path = write_result(
        "snips_quality", data=os.path.abspath(args.data), config=os.path.relpath(args.config, ROOT),
        epochs=epochs, seeds=args.seeds, runs=runs, mean_std=ours, trainer_s=trainer_s,
        epoch_s_median=epoch_s, baseline_script=baseline,
        epoch_time_ratio=epoch_s / baseline["epoch_s"] if baseline else None,
        trainer_budget_s=BUDGET_S, within_budget=trainer_s["max"] <= BUDGET_S,
        target={"model": TARGET, **{c: float(target[c]) for _, _, c in METRICS}}, meets_target=meets,
        published_no_pretrained_lm=published)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
