"""The Trainer's epoch time against the plain Keras script's (bench/baseline_bilstm.py, the honest
reference: autotuning off, character CNN over all tokens at once), their epochs interleaved.

    python bench/epoch_time.py --work-dir bench/work/snips/pipeline-work
                               [--config mtmoe/configs/snips.yaml] [--data ../shared/data/snips]
                               [--epochs 5]

Both train in processes of their own and take turns one whole epoch at a time (bench/baton.py): the
Trainer (bench/trainer_only.py on the Transform output of `--work-dir`, as the pipeline's Trainer
runs it) and the script on the same SNIPS files. Each epoch's training seconds exclude validation;
the first epoch (tracing) of each is left out of the medians. Writes bench/results/epoch_time.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from machine import write_result

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUDGET = 2.0  # the Trainer's epoch at most this many times the script's


def _last_json(path: str) -> dict:
    with open(path) as f:
        return json.loads([line for line in f.read().splitlines() if line.startswith("{")][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="a pipeline work dir with a SNIPS Transform")
    parser.add_argument("--config", default=os.path.join(ROOT, "mtmoe", "configs", "snips.yaml"))
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "snips"))
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="epoch-time-")
    baton = os.path.join(folder, "turn")
    with open(baton, "w") as f:
        f.write("trainer")
    logs = {name: os.path.join(folder, f"{name}.log") for name in ("trainer", "script")}
    commands = {
        "trainer": [sys.executable, os.path.join(HERE, "trainer_only.py"), "--work-dir", args.work_dir,
                    "--config", args.config, "--set", f"training.epochs={args.epochs}",
                    "--baton", f"{baton}:trainer:script"],
        "script": [sys.executable, os.path.join(HERE, "baseline_bilstm.py"), "--data", args.data,
                   "--epochs", str(args.epochs), "--patience", str(args.epochs),
                   "--baton", f"{baton}:script:trainer"],
    }
    print(f"{args.epochs} epochs each, interleaved (logs: {folder})", flush=True)
    processes = {name: subprocess.Popen(command, stdout=open(logs[name], "w"),
                                        stderr=subprocess.STDOUT)
                 for name, command in commands.items()}
    for name, process in processes.items():
        if process.wait():
            sys.exit(f"{name} failed; its log: {logs[name]}")
    seconds = {"trainer": _last_json(logs["trainer"])["epoch_seconds"],
               "script": _last_json(logs["script"])["epoch_seconds"]}
    medians = {name: statistics.median(values[1:]) for name, values in seconds.items()}
    ratio = medians["trainer"] / medians["script"]
    for name, values in seconds.items():
        print(f"{name}: seconds per epoch {values}; median of epochs 2+ {medians[name]:.1f}")
    print(f"ratio {ratio:.2f} (budget {BUDGET:g}x)")
    path = write_result("epoch_time", config=os.path.relpath(args.config, ROOT), epochs=args.epochs,
                        epoch_seconds=seconds, median_epochs_2_on=medians, ratio=ratio,
                        budget=BUDGET, within_budget=ratio <= BUDGET)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
