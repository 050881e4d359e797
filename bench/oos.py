"""Out-of-scope answers and calibration, through the newcomer's path (`mtmoe init` -> `data convert`
-> `mtmoe run`, nothing edited), 3 seeds, test split:

- CLINC150 "Full": in-scope accuracy over its 150 intents (a rejected in-scope query is an error)
  and recall of its 1,000 out-of-scope test queries (Larson et al. 2019's two metrics), for the
  `oos` label trained as a class alone and with the rejection threshold chosen on eval (what
  `init`'s config serves);
- CLINC150 with its out-of-scope texts left out of training (`clinc150-threshold`; kept in eval,
  where the threshold is chosen, and in test): the rejection threshold alone answers out of scope.
  Eval and test then hold a label that training lacks, which the run's data checks rightly flag,
  so it runs with `--allow-anomalies`;
- Banking77 and SNIPS (no out-of-scope label): accuracy, and ECE / NLL before and after
  temperature scaling.

Each run's exported model scores the test texts once more, so that every row comes from the same
model: the out-of-scope class alone is the threshold 0, and the probabilities before calibration are
the served ones with the fitted temperature undone (softmax(T log p)).

    python bench/oos.py [--datasets clinc150 clinc150-threshold banking77 snips] [--seeds 42 43 44]
"""
import argparse
import json
import os
import sys

import numpy as np

from machine import RESULTS, newest, write_result
from defaults import DATASETS, prepare, seeded
from snips_quality import run_pipeline, spread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work", "oos")
OUTPUT = os.path.join(RESULTS, "oos.json")
TASK = "intent"
OPERATING_POINTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# {variant: (the dataset it is made from, its label field, the out-of-scope label left out of its
# training split)}
WITHOUT_OUT_OF_SCOPE_TRAINING = {"clinc150-threshold": ("clinc150", "intent", "oos")}
PUBLISHED = {"clinc150": "Larson et al. 2019, Full, no pretraining: CNN 91.2 / 18.9 (oos trained), "
                         "90.9 / 30.9 (threshold); FastText 89.0 / 9.7; Rasa 91.5 / 45.3. With "
                         "pretrained encoders: BERT 96.9 / 40.3 (trained), 96.2 / 52.3 (threshold)"}


def test_probabilities(work_dir: str):
    """(served test probabilities [N, C], gold class ids [N] with the last class for out-of-scope
    or unseen labels, the Trainer's training.json) of a run's trained model, on the test split as
    `data convert` wrote it (tf.Examples, whatever the source format)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    import tensorflow_transform as tft

    from mtmoe.core.config import load_config
    from mtmoe.trainer.features import class_names

    pipeline = os.path.join(work_dir, "pipeline")
    model = tf.saved_model.load(newest(f"{pipeline}/Trainer/model/*/Format-Serving"))
    with open(os.path.join(newest(f"{pipeline}/Trainer/model_run/*/training.json"))) as f:
        training = json.load(f)
    config = load_config(os.path.join(work_dir, "..", os.path.basename(work_dir) + ".yaml"))
    task = next(t for t in config.tasks if t.name == TASK)
    names = class_names(tft.TFTransformOutput(newest(f"{pipeline}/Transform/transform_graph/*")),
                        task)
    index = {label: i for i, label in enumerate(names[:-1])}
    files = tf.io.gfile.glob(os.path.join(os.path.dirname(work_dir), "data", "span-*", "test", "*"))
    label = {task.label_field: tf.io.FixedLenFeature([], tf.string)}
    served, gold = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(256):
        served.append(model.signatures["serving_examples"](examples=batch)[TASK].numpy())
        gold += [index.get(value.decode(), len(names) - 1) for value in
                 tf.io.parse_example(batch, label)[task.label_field].numpy()]
    return np.concatenate(served).astype(np.float64), np.array(gold), training


def scores(probabilities, gold, reject_below: float) -> dict:
    """Accuracy, in-scope accuracy, out-of-scope recall, ECE and NLL of one set of probabilities."""
    from mtmoe.core.metrics import accepted, add_counts
    from mtmoe.core.tasks import TASK_TYPES

    kind, counts = TASK_TYPES["classification"], {}
    answers = accepted(probabilities, reject_below)
    for p, label, answer in zip(probabilities, gold, answers):
        add_counts(counts, kind.count(np.array([label]), p, np.array([answer])))
    result = kind.score(counts, out_of_scope=True)
    return {metric: 100 * result[metric] if metric not in ("ece", "nll") else result[metric]
            for metric in ("accuracy", "in_scope_accuracy", "out_of_scope_recall", "ece", "nll")}


def uncalibrated(probabilities, temperature: float):
    """The probabilities before temperature scaling: softmax(T log p)."""
    from mtmoe.core.metrics import calibration_logits

    logits = temperature * calibration_logits(probabilities, binary=False)
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def without_out_of_scope_training(shared: str, dataset: str, field: str, label: str,
                                  work: str) -> str:
    """A copy of a JSONL dataset whose training split lacks the texts whose `field` is `label`; eval
    and test whole."""
    source = os.path.join(work, "source")
    if not os.path.isdir(source):
        os.makedirs(source + ".part")
        for split in ("train", "eval", "test"):
            with open(os.path.join(shared, DATASETS[dataset][0], f"{split}.jsonl")) as lines, \
                    open(os.path.join(source + ".part", f"{split}.jsonl"), "w") as out:
                out.writelines(line for line in lines
                               if split != "train" or json.loads(line)[field] != label)
        os.rename(source + ".part", source)
    return source


def run_dataset(name: str, args) -> dict:
    work = os.path.join(args.work_dir, name)
    os.makedirs(work, exist_ok=True)
    options = ()
    if name in WITHOUT_OUT_OF_SCOPE_TRAINING:
        dataset, field, label = WITHOUT_OUT_OF_SCOPE_TRAINING[name]
        config, data = prepare(dataset, args.shared, work, without_out_of_scope_training(
            args.shared, dataset, field, label, work))
        options = ("--allow-anomalies",)
    else:
        config, data = prepare(name, args.shared, work)
    runs = []
    for seed in args.seeds:
        path = seeded(config, os.path.join(work, f"init-{seed}.yaml"), seed, {})
        print(f"{name}: seed {seed} (log: {work}/init-{seed}.log)", flush=True)
        done = os.path.join(work, f"init-{seed}", "summary.json")
        if args.rescore and os.path.isfile(done):  # the run's model, scored again
            with open(done) as f:
                summary = json.load(f)
        else:
            summary = run_pipeline(path, data, os.path.join(work, f"init-{seed}"), args.epochs,
                                   log=os.path.join(work, f"init-{seed}.log"), options=options)
        probabilities, gold, training = test_probabilities(os.path.join(work, f"init-{seed}"))
        rejection = training.get("rejection", {}).get(TASK, {})
        temperature = training["calibration"][TASK]["temperature"]
        threshold = rejection.get("reject_below", 0.0)
        runs.append({
            "seed": seed, "trainer_s": summary["components"]["Trainer"],
            "temperature": temperature, "reject_below": threshold,
            "rejection": rejection, "test_metrics": summary["test_metrics"][TASK],
            "served": scores(probabilities, gold, threshold),
            "out_of_scope_class_alone": scores(probabilities, gold, 0.0),
            "before_calibration": scores(uncalibrated(probabilities, temperature), gold, threshold),
            # The trade-off the threshold makes on test, for readers with other costs.
            "operating_points": [{"reject_below": t, **scores(probabilities, gold, t)}
                                 for t in OPERATING_POINTS],
        })
    variants = ("served", "out_of_scope_class_alone", "before_calibration")
    return {"config": "mtmoe init's, nothing edited", "seeds": args.seeds,
            "published": PUBLISHED.get(name), "runs": runs,
            "mean_std": {variant: {metric: spread(values) if all(v == v for v in values) else None
                                   for metric in runs[0][variant]
                                   for values in [[run[variant][metric] for run in runs]]}
                         for variant in variants}
            | {"trainer_s": spread([run["trainer_s"] for run in runs])}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+",
                        choices=["clinc150", "banking77", "snips", *WITHOUT_OUT_OF_SCOPE_TRAINING],
                        default=["clinc150", "banking77"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--work-dir", default=WORK)
    parser.add_argument("--epochs", type=int, help="override training.epochs (a smoke run)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the models of finished runs again instead of training anew")
    args = parser.parse_args()
    results = {}
    if os.path.exists(OUTPUT):
        with open(OUTPUT) as f:
            results = json.load(f).get("datasets", {})
    for name in args.datasets:
        results[name] = run_dataset(name, args)
        write_result("oos", datasets=results)
        for variant, metrics in results[name]["mean_std"].items():
            if variant != "trainer_s":
                print(name, variant, {m: f"{v['mean']:.3f} ± {v['std']:.3f}" for m, v in metrics.items()
                                      if v is not None})


if __name__ == "__main__":
    sys.exit(main())
