"""Wall time per component of `mtmoe run` on the generated sample, in a new work dir, then an
unchanged re-run (what the cache saves: all but the Trainer, which warm-starts from the model the
first run blessed, and what follows it).

    python bench/pipeline_overhead.py [--work-dir bench/work/overhead] [-- extra mtmoe run args]

The work dir is emptied first (a cached run would time nothing); the other benchmarks keep theirs
beside it.

Writes bench/results/pipeline_overhead.json with the machine, the versions and the command.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from machine import RESULTS, write_result


def run(work_dir, extra):
    start = time.perf_counter()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "mtmoe"), "run", "--work-dir",
                    work_dir, *extra], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    with open(os.path.join(work_dir, "summary.json")) as f:
        summary = json.load(f)
    return round(seconds, 1), summary["run_id"], summary["components"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=os.path.join(os.path.dirname(RESULTS), "work", "overhead"))
    parser.add_argument("extra", nargs="*", help="arguments passed on to `mtmoe run`")
    args = parser.parse_args()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    first_total, first_run, first = run(args.work_dir, args.extra)
    second_total, second_run, second = run(args.work_dir, args.extra)
    if second_run == first_run:  # nothing new: the re-run ran no pipeline (and wrote no summary)
        second = {}
    print("| component | first run s | unchanged re-run s |\n|---|---|---|")
    for name in first:
        print(f"| {name} | {first[name]:.1f} | {second[name]:.1f} |" if name in second else
              f"| {name} | {first[name]:.1f} | not run |")
    print(f"| **whole command** | {first_total:.1f} | {second_total:.1f} |")
    write_result("pipeline_overhead", first_run={"total_s": first_total, "components_s": first},
                 rerun={"total_s": second_total, "components_s": second})

if __name__ == "__main__":
    main()
