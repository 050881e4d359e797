"""The defaults benchmark: on each dataset, the config `mtmoe init` writes (nothing edited) against
the best config the dev sweep found for that dataset, on the test split, over paired seeds.

    python bench/defaults.py [--datasets snips banking77 ...] [--seeds 42 43 44]
                             [--shared ../shared/data] [--work-dir bench/work/defaults-final]

Per dataset: `mtmoe init` and `mtmoe data convert` once; then per seed, for each of the two configs,
`mtmoe run` from scratch (warm start off, `training.seed` set) in a work dir of its own, so that
nothing is cached between them. "tuned" is init's config with the dataset's TUNED overrides, each
chosen on the eval split in the logged sweep (bench/results/defaults_dev.jsonl, written by
bench/trainer_only.py) before any test number was read. Test metrics are the TestScorer's; Trainer
seconds the run summary's. A dataset whose result is already in the output file for the same
seeds and overrides is not run again (--rerun runs it). Writes bench/results/defaults.json.

MixSNIPS-style data is made from SNIPS first (bench/mixsnips.py) when it is missing.
"""
import argparse
import json
import os
import subprocess
import sys

import yaml

from machine import RESULTS, write_result
from snips_quality import mtmoe_command, run_pipeline, spread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "defaults-final")
OUTPUT = os.path.join(RESULTS, "defaults.json")

# name: (folder under --shared, or under the work dir when made here; mtmoe format)
DATASETS = {
    "snips": ("snips", "slu"),
    "banking77": ("banking77", "jsonl"),
    "clinc150": ("clinc150", "jsonl"),
    "nlupp": ("nlupp", "jsonl"),
    "mixsnips": (None, "jsonl"),  # made by bench/mixsnips.py
}
# The best config the dev sweep found per dataset, as overrides of init's (section.field: value);
# {} where init's own config was the best screened. Rows of bench/results/defaults_dev.jsonl: on
# each dataset the recipe at (or nearest) init's epochs beat every other setting screened (the
# sample model; fewer epochs on NLU++; no BiLSTM and length bucketing on Banking77).
TUNED = {
    "snips": {},
    "banking77": {},
    "clinc150": {},
    "nlupp": {},
    "mixsnips": {},
}
# Configs that ship for a dataset, run beside init's on the same seeds (the bar: SNIPS
# through init within 0.3 of snips.yaml).
SHIPPED = {"snips": os.path.join(ROOT, "mtmoe", "configs", "snips.yaml")}
# Published results to read beside ours (the datasets' READMEs in ../shared/data and
# ../shared/reference/published_slu_results.csv); none where no comparable split is published.
ANCHORS = {
    "snips": "OpenSLU Stack-Propagation (reproduced): slot F1 94.6, intent 97.9, overall 87.1",
    "clinc150": "oos as a class, no pretraining (Larson et al. 2019): FastText in-scope 89.0 / "
                "oos recall 9.7, CNN 91.2 / 18.9 (the 151-class accuracy is not published)",
    "banking77": "published systems use pretrained encoders (Casanueva et al. 2020)",
    "nlupp": "the paper trains on 1 or 10 folds, not this 14-fold split",
    "mixsnips": "built here from SNIPS (MixSNIPS itself has 39,776 training texts)",
}


def _run(command, log):
    with open(log, "w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT)


def prepare(name: str, shared: str, work: str, source: str = None):
    """(init's config, the data root) of one dataset (or of a variant of it in `source`, a folder in
    the dataset's format), made once."""
    folder, fmt = DATASETS[name]
    source = source or (os.path.join(shared, folder) if folder else os.path.join(work, "source"))
    if folder is None and not os.path.isdir(source):
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "mixsnips.py"), "--snips",
                        os.path.join(shared, "snips"), "--out", source], check=True)
    config, data = os.path.join(work, "init.yaml"), os.path.join(work, "data")
    if not os.path.isfile(config):
        _run(mtmoe_command("init", "--data", source, "--format", fmt, "--out", config),
             os.path.join(work, "init.log"))
    if not os.path.isdir(os.path.join(data, "span-1")):
        _run(mtmoe_command("data", "convert", "--format", fmt, source, data, "--config", config),
             os.path.join(work, "convert.log"))
    return config, data


def seeded(config: str, path: str, seed: int, overrides: dict) -> str:
    """`config` with training.seed, warm start off and `overrides` ({section.field: value}), written
    to `path` with its schema's path made absolute."""
    from mtmoe.core.config import load_config

    with open(config) as f:
        raw = yaml.safe_load(f)
    raw.setdefault("training", {}).update(seed=seed, warm_start=False)
    for key, value in overrides.items():
        section, field = key.split(".")
        raw.setdefault(section, {})[field] = value
    raw.setdefault("validation", {})["schema"] = load_config(config).validation.schema
    with open(path, "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return path


def primary_metrics(config: str) -> dict:
    """{task: primary metric} of a config's tasks, and overall accuracy where there are several."""
    from mtmoe.core.config import load_config
    from mtmoe.core.tasks import task_type

    tasks = load_config(config).tasks
    metrics = {task.name: task_type(task).primary_metric for task in tasks}
    if len(tasks) > 1:
        metrics["overall"] = "accuracy"
    return metrics


def run_dataset(name: str, args) -> dict:
    work = os.path.join(args.work_dir, name)
    os.makedirs(work, exist_ok=True)
    config, data = prepare(name, args.shared, work)
    metrics = primary_metrics(config)
    result = {"seeds": args.seeds, "tuned_overrides": TUNED[name], "anchor": ANCHORS.get(name),
              "metrics": metrics, "runs": {"init": [], "tuned": []}}
    variants = [("init", config, {}), ("tuned", config, TUNED[name])]
    if name in SHIPPED:
        result["shipped_config"] = os.path.relpath(SHIPPED[name], ROOT)
        result["runs"]["shipped"] = []
        variants.append(("shipped", SHIPPED[name], {}))
    for seed in args.seeds:
        for variant, source, overrides in variants:
            if variant == "tuned" and not overrides:
                continue  # init's config is the tuned one: the same runs
            path = seeded(source, os.path.join(work, f"{variant}-{seed}.yaml"), seed, overrides)
            print(f"{name}: {variant}, seed {seed} (log: {work}/{variant}-{seed}.log)", flush=True)
            summary = run_pipeline(path, data, os.path.join(work, f"{variant}-{seed}"),
                                   log=os.path.join(work, f"{variant}-{seed}.log"))
            test = summary["test_metrics"]
            result["runs"][variant].append({
                "seed": seed, **{task: 100 * test[task][metric] for task, metric in metrics.items()},
                "trainer_s": summary["components"]["Trainer"], "kept_epoch": summary["kept_epoch"]})
    if not TUNED[name]:
        result["runs"]["tuned"] = result["runs"]["init"]
    result["mean_std"] = {variant: {task: spread([r[task] for r in runs]) for task in
                                    [*metrics, "trainer_s"]}
                          for variant, runs in result["runs"].items()}
    # Paired by seed: init minus tuned (and minus the shipped config), per task (negative: init is
    # behind).
    for other, key in (("tuned", "gap"), ("shipped", "gap_to_shipped")):
        if result["runs"].get(other):
            result[key] = {task: spread([i[task] - t[task] for i, t in
                                         zip(result["runs"]["init"], result["runs"][other])])
                           for task in metrics}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--work-dir", default=WORK)
    parser.add_argument("--rerun", action="store_true", help="run datasets already in the output")
    args = parser.parse_args()
    done = {}
    if os.path.isfile(OUTPUT):
        with open(OUTPUT) as f:
            done = json.load(f).get("datasets", {})
    results = dict(done)
    for name in args.datasets:
        previous = done.get(name, {})
        if (not args.rerun and previous.get("seeds") == args.seeds
                and previous.get("tuned_overrides") == TUNED[name]
                and (name not in SHIPPED or "shipped" in previous.get("runs", {}))):
            print(f"{name}: in {OUTPUT} already (--rerun runs it again)")
            continue
        results[name] = run_dataset(name, args)
        write_result("defaults", datasets=results)  # after each dataset: hours of work are kept
    print("\n| dataset | task | init (mean ± std) | tuned | init - tuned (paired) | Trainer s |")
    print("|---|---|---|---|---|---|")
    for name, result in results.items():
        for task in result["metrics"]:
            init, tuned = result["mean_std"]["init"][task], result["mean_std"]["tuned"][task]
            gap = result["gap"][task]
            print(f"| {name} | {task} | {init['mean']:.1f} ± {init['std']:.1f} | "
                  f"{tuned['mean']:.1f} ± {tuned['std']:.1f} | {gap['mean']:+.1f} ± {gap['std']:.1f} "
                  f"| {result['mean_std']['init']['trainer_s']['max']:.0f} |")
    for name, result in results.items():
        if "gap_to_shipped" in result:
            print(f"\n{name}: init - {result['shipped_config']} (paired): " + ", ".join(
                f"{task} {gap['mean']:+.2f} ± {gap['std']:.2f}"
                for task, gap in result["gap_to_shipped"].items()))
    print(f"\nwrote {OUTPUT}")


if __name__ == "__main__":
    main()
