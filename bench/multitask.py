"""Multi-task vs one model per task: the same trunk trained once with every task of a config, and once
per task (a copy of the config with only that task), through the real pipeline.

    python bench/multitask.py [--data ../shared/data/snips] [--config mtmoe/configs/snips.yaml]
                              [--seeds 42 43 44] [--trunk dense|mmoe|deepseek_moe] [--epochs N]
                              [--calls 200] [--work-dir bench/work/multitask]

Per setting, over the seeds (each trains from scratch; a setting's seeds share its work dir, so its
Transform runs once): each task's test metric (mean ± std), the Trainer's wall time (the run
summary's; mean), trainable parameters and the in-process latency of the last seed's exported
`serving_default` on one text (p50 over `--calls` calls after warm-up; the one-task models'
latencies are summed, since answering every task on a text takes all of them). Test metrics are the
TestScorer's. The claim checked: one shared model costs less than the sum of the
one-task models and loses no quality. The data is converted once with `mtmoe data convert --format
slu` into the work dir of bench/snips_quality.py and shared with it. Writes
bench/results/multitask.json with the machine, the versions and the command.
"""
import argparse
import glob
import os
import shutil
import statistics

from machine import RESULTS, write_result
from snips_quality import ROOT, WORK, config_copy, convert, run_pipeline, spread

TEXT = "play the latest album by daft punk on spotify"


def trainable_parameters(config_path: str, work_dir: str) -> int:
    """Trainable weights of the model that config and the run's Transform output build."""
    import keras
    import numpy as np
    import tensorflow_transform as tft

    from mtmoe.core.config import load_config
    from mtmoe.trainer.features import vocabularies, vocabulary_sizes
    from mtmoe.trainer.model import build_model

    config = load_config(config_path)
    graph = max(glob.glob(os.path.join(work_dir, "pipeline", "Transform", "transform_graph", "*")),
                key=lambda p: int(os.path.basename(p)))
    tft_output = tft.TFTransformOutput(graph)
    names = vocabularies(tft_output, config)
    keras.backend.clear_session()
    model = build_model(config, vocabulary_sizes(tft_output, config),
                        {task.name: len(names[task.name]) for task in config.tasks})
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def latency_ms(work_dir: str, calls: int) -> float:
    """p50 ms of the Trainer's exported model on TEXT (pushed or not: the Evaluator may refuse a
    model of a reduced run)."""
    from mtmoe.serving.predict import Predictor
    from serving_latency import timed

    model_dir = max(glob.glob(os.path.join(work_dir, "pipeline", "Trainer", "model", "*")),
                    key=lambda p: int(os.path.basename(p)))
    predictor = Predictor(os.path.join(model_dir, "Format-Serving"))
    return timed(predictor.outputs, [[TEXT]] * calls, warmup=20)["p50_ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "snips"),
                        help="SNIPS-format folder: {train,dev,test}/{seq.in,seq.out,label}")
    parser.add_argument("--config", default=os.path.join(ROOT, "mtmoe", "configs", "snips.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--trunk", choices=("dense", "mmoe", "deepseek_moe"),
                        help="override model.trunk (default: the config's)")
    parser.add_argument("--epochs", type=int, help="override training.epochs (a reduced run)")
    parser.add_argument("--calls", type=int, default=200, help="latency: timed calls per model")
    parser.add_argument("--work-dir", default=os.path.join(os.path.dirname(RESULTS), "work", "multitask"))
    parser.add_argument("--data-work-dir", default=WORK, help="where the converted data lives")
    args = parser.parse_args()

    from mtmoe.core.config import load_config
    from mtmoe.core.tasks import task_type

    config = load_config(args.config)
    trunk = args.trunk or config.model.trunk
    task_names = [task.name for task in config.tasks]
    primary = {task.name: task_type(task).primary_metric for task in config.tasks}
    data_root = convert(args.data, args.data_work_dir, args.config)
    settings = {"multi-task": task_names, **{f"only {name}": [name] for name in task_names}}
    rows = {}
    for setting, tasks in settings.items():
        slug = "all" if len(tasks) > 1 else tasks[0]
        work_dir = os.path.join(args.work_dir, slug)
        shutil.rmtree(work_dir, ignore_errors=True)  # a cached Trainer would time nothing
        runs = []
        for seed in args.seeds:  # one work dir per setting: its Transform runs once
            copy = config_copy(args.config, os.path.join(args.work_dir, "configs", f"{slug}-{seed}.yaml"),
                               tasks=tasks, model={"trunk": trunk}, seed=seed, warm_start=False)
            log = f"{work_dir}-{seed}.log"
            print(f"{setting}, seed {seed}: mtmoe run (log: {log})", flush=True)
            summary = run_pipeline(copy, data_root, work_dir, args.epochs, log)
            runs.append({"seed": seed, "trainer_s": summary["components"]["Trainer"],
                         "kept_epoch": summary["kept_epoch"],
                         "test_metrics": {task: summary["test_metrics"][task] for task in tasks}})
            print(f"  {runs[-1]}", flush=True)
        rows[setting] = {
            "tasks": tasks,
            "trainable_params": trainable_parameters(copy, work_dir),
            "trainer_s": statistics.mean(r["trainer_s"] for r in runs),
            "latency_ms": latency_ms(work_dir, args.calls),
            "metrics": {task: spread([r["test_metrics"][task][primary[task]] for r in runs])
                        for task in tasks},
            "runs": runs,
        }

    shared = rows["multi-task"]
    separate = [rows[f"only {name}"] for name in task_names]
    total = {key: sum(r[key] for r in separate) for key in ("trainable_params", "trainer_s", "latency_ms")}
    quality = {name: {"metric": primary[name],
                      "multi_task": shared["metrics"][name]["mean"],
                      "one_model": rows[f"only {name}"]["metrics"][name]["mean"]}
               for name in task_names}
    for q in quality.values():
        q["change"] = q["multi_task"] - q["one_model"]

    print(f"\ntrunk {trunk}, {len(args.seeds)} seed(s) ({', '.join(map(str, args.seeds))}): test "
          "metrics, mean ± std over seeds; Trainer s, mean over seeds")
    print("\n| setting | trainable params | Trainer s | latency ms (all tasks, 1 text) | "
          + " | ".join(f"{n} {quality[n]['metric']}" for n in task_names) + " |")
    print("|---" * (4 + len(task_names)) + "|")
    for setting, row in rows.items():
        print(f"| {setting} | {row['trainable_params']:,} | {row['trainer_s']:.0f} | {row['latency_ms']:.2f} | "
              + " | ".join(f"{row['metrics'][n]['mean']:.4f} ± {row['metrics'][n]['std']:.4f}"
                           if n in row["tasks"] else "-" for n in task_names) + " |")
    print(f"| one model per task (sum) | {total['trainable_params']:,} | {total['trainer_s']:.0f} | "
          f"{total['latency_ms']:.2f} | "
          + " | ".join(f"{quality[n]['one_model']:.4f}" for n in task_names) + " |")
    cheaper = {key: shared[key] < total[key] for key in total}
    no_loss = {name: q["change"] >= 0 for name, q in quality.items()}
    print("\nshared model cheaper than the sum: "
          + ", ".join(f"{k} {'yes' if v else 'NO'} ({shared[k]:,} vs {round(total[k], 2):,})"
                      for k, v in cheaper.items()))
    print("no quality lost (means over seeds): " + ", ".join(
        f"{n} {'yes' if ok else 'NO'} ({quality[n]['change']:+.4f})" for n, ok in no_loss.items()))
    path = write_result("multitask", config=os.path.relpath(args.config, ROOT), trunk=trunk,
                        data=os.path.abspath(args.data), epochs=args.epochs or config.training.epochs,
                        seeds=args.seeds, text=TEXT, latency_calls=args.calls, settings=rows,
                        one_model_per_task_sum=total, quality=quality, shared_is_cheaper=cheaper,
                        shared_loses_no_quality=no_loss)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
