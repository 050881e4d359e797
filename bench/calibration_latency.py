"""What the calibration and the out-of-scope rejection cost a served text: one model, exported twice
in the same process (its classification and multi-label heads temperature-scaled and its intent
answering out of scope below a threshold, and neither), then batch-1 `serving_default` latency of
each export loaded as the in-process path loads it, in interleaved rounds.

The weights are the freshly built model's: the ops and shapes, hence the time, are a trained
model's (the temperatures and threshold are fixed values; they change numbers, not work).

    python bench/calibration_latency.py [--work-dir bench/work/decay/base] [--rounds 10]
"""
import argparse
import os
import tempfile

import mtmoe  # noqa: F401  sets the Keras environment before TensorFlow loads
import numpy as np

from machine import newest, write_result
from serving_latency import timed, warmup_texts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exports(work_dir: str, config_path, folder: str):
    """{name: export dir} of the model with and without its calibration and rejection."""
    import tensorflow_transform as tft

    from mtmoe.core.config import CLASSIFICATION, load_config
    from mtmoe.trainer.calibration import calibrated_tasks
    from mtmoe.trainer.export import export_serving_model
    from mtmoe.trainer.features import vocabularies, vocabulary_sizes
    from mtmoe.trainer.model import build_model

    config = load_config(config_path)
    tft_output = tft.TFTransformOutput(newest(f"{work_dir}/pipeline/Transform/transform_graph/*"))
    names = vocabularies(tft_output, config)
    classes = {task.name: len(names[task.name]) for task in config.tasks}
    model = build_model(config, vocabulary_sizes(tft_output, config), classes)
    first = next(task for task in config.tasks if task.type == CLASSIFICATION)
    settings = {"calibrated, rejecting": ({t.name: 2.0 for t in calibrated_tasks(config.tasks)},
                                          {first.name: 0.5}),
                "neither": (None, None)}
    dirs = {}
    for name, (temperatures, reject_below) in settings.items():
        dirs[name] = os.path.join(folder, name.split(",")[0], "1")
        export_serving_model(model, tft_output, config, dirs[name], temperatures=temperatures,
                             reject_below=reject_below)
    return dirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "bench", "work", "decay", "base"),
                        help="a pipeline work dir whose Transform output the model reads")
    parser.add_argument("--config", help="the config of that work dir (default: the packaged one)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    from mtmoe.serving.predict import Predictor

    dirs = exports(args.work_dir, args.config, tempfile.mkdtemp(prefix="calibration-latency-"))
    predictors = {name: Predictor(path) for name, path in dirs.items()}
    texts = warmup_texts(newest(f"{args.work_dir}/serving_model/*"))
    batches = [[texts[i % len(texts)]] for i in range(args.requests)]
    rounds = {name: [] for name in dirs}
    for index in range(args.rounds):
        for name in (list(dirs) if index % 2 == 0 else list(dirs)[::-1]):
            rounds[name].append(timed(predictors[name].outputs, batches)["p50_ms"])
    medians = {name: float(np.median(values)) for name, values in rounds.items()}
    added = [a - b for a, b in zip(rounds["calibrated, rejecting"], rounds["neither"])]
    for name, values in rounds.items():
        print(f"{name}: batch-1 p50 ms per round {values}; median {medians[name]:.3f}")
    print(f"added by the calibration and rejection: median {np.median(added) * 1000:.0f} us")
    write_result("calibration_latency", work_dir=os.path.relpath(args.work_dir, ROOT),
                 requests_per_round=args.requests, p50_ms_per_round=rounds,
                 median_p50_ms=medians, added_ms_per_round=[round(a, 3) for a in added],
                 median_added_ms=round(float(np.median(added)), 3))


if __name__ == "__main__":
    main()
