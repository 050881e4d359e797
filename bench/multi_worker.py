"""Step time of the Trainer on 1 process and on 2 local workers (MultiWorkerMirroredStrategy over
127.0.0.1), on the inputs of the latest Trainer of a finished `mtmoe run`:

    python bench/multi_worker.py --work-dir bench/work/overhead [--epochs 4]

Each setting trains from scratch with the same global batch and seed, without export; the epoch
seconds after the first (which traces the graphs) give the step time. On one 2-core machine two
workers share the cores, so no speed-up is expected: this measures the cost of the collective
ops, and the README's Distributed training section reports it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mtmoe.core.cluster import loopback_cluster


def _train(args) -> None:
    """One training process (a worker when TF_CONFIG is set): prints its epoch seconds."""
    import mtmoe  # noqa: F401  the Keras environment before TensorFlow loads
    from mtmoe.core.config import load_config
    from mtmoe.trainer.distribution import distribution_strategy

    config = load_config(args.config)
    distribution = "multi_worker" if os.environ.get("TF_CONFIG") else "none"
    distribution_strategy(distribution)  # first: collective ops are set up at program start
    from ml_metadata.proto import metadata_store_pb2

    from mtmoe.core.file_names import EXPORT_KEY, HISTORY_FILE
    from mtmoe.pipeline.local_runner import TRAINER, read_only_store
    from mtmoe.pipeline.paths import Paths
    from mtmoe.pipeline.workers import trainer_fn_args
    from mtmoe.trainer.module import run_fn

    paths = Paths(data_root="", work_dir=os.path.abspath(args.work_dir))
    store = read_only_store(paths)
    node = store.get_context_by_type_and_name("node", f"{config.pipeline.name}.{TRAINER}")
    execution = max((e for e in store.get_executions_by_context(node.id)
                     if e.last_known_state == metadata_store_pb2.Execution.COMPLETE),
                    key=lambda e: e.id)
    fn_args = trainer_fn_args(store, execution)
    settings = fn_args.custom_config["config"]
    settings["training"].update(epochs=args.epochs, distribution=distribution, warm_start=False)
    fn_args.custom_config = {**fn_args.custom_config, EXPORT_KEY: False}
    fn_args.base_model = None
    out = tempfile.mkdtemp()
    fn_args.serving_model_dir = os.path.join(out, "Format-Serving")
    fn_args.model_run_dir = os.path.join(out, "run")
    run_fn(fn_args)
    import tensorflow as tf

    examples = sum(1 for _ in tf.data.TFRecordDataset(
        [f for pattern in fn_args.train_files for f in tf.io.gfile.glob(pattern)],
        compression_type="GZIP"))
    print(f"STEPS {-(-examples // settings['training']['batch_size'])}", flush=True)
    history_file = os.path.join(fn_args.model_run_dir, HISTORY_FILE)
    if os.path.exists(history_file):  # the chief's (or the single process's)
        with open(history_file) as f:
            print("EPOCH_SECONDS " + json.dumps(json.load(f)["epoch_seconds"]), flush=True)


def _setting(args, workers: int) -> dict:
    command = [sys.executable, __file__, "--train", "--work-dir", args.work_dir,
               "--epochs", str(args.epochs)] + (["--config", args.config] if args.config else [])
    cluster = loopback_cluster(workers)
    processes = []
    for index in range(workers):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True))
    started = time.perf_counter()
    outputs = [p.communicate()[0] for p in processes]
    if any(p.returncode for p in processes):
        raise SystemExit(f"{workers} worker(s): a training process failed")
    seconds, = [json.loads(line.split(" ", 1)[1]) for out in outputs
                for line in out.splitlines() if line.startswith("EPOCH_SECONDS ")]
    steps = int(next(line.split()[1] for line in outputs[0].splitlines()
                     if line.startswith("STEPS ")))
    steady = statistics.median(seconds[1:])
    return {"workers": workers, "wall_seconds": round(time.perf_counter() - started, 1),
            "epoch_seconds": seconds, "steady_epoch_seconds": steady, "steps_per_epoch": steps,
            "step_ms": round(1000 * steady / steps, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", required=True, help="the work dir of a finished `mtmoe run`")
    parser.add_argument("--config", help="that run's config (default: the packaged one)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:
        return _train(args)
    from machine import write_result

    rows = [_setting(args, workers) for workers in (1, 2)]
    for row in rows:
        print(f"{row['workers']} worker(s): {row['step_ms']} ms per step of the global batch "
              f"({row['steady_epoch_seconds']:.1f} s per epoch of {row['steps_per_epoch']} steps "
              f"after the first; epochs {row['epoch_seconds']}), {row['wall_seconds']} s in all")
    print(write_result("multi_worker", epochs=args.epochs, rows=rows))


if __name__ == "__main__":
    sys.exit(main())
