"""`mtmoe monitor`'s false alarms and its drift demo, on a Banking77 model trained by `make
bench-oos` (its thresholds were fixed in mtmoe/serving/monitor.py before this ran):

- false alarms: random samples of Banking77's own test texts (the model never trained on them, but
  they come from its distribution), of several sizes, each compared with the eval split as the
  monitor compares logged texts; the share of samples with any finding;
- drift: CLINC150 texts (other domains, out-of-scope queries) sent to the same model, same sizes;
  the share of samples flagged;
- end to end: each kind of traffic logged by the server's RequestLog, then `mtmoe monitor` on the
  log, with its exit status.

    python bench/monitor.py [--model bench/work/oos/banking77/init-42/serving_model]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from machine import write_result
from snips_quality import mtmoe_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = (200, 500, 1000)


def _texts(path):
    with open(path) as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _sample(columns, rows):
    return {name: [values[i] for i in rows] for name, values in columns.items()}


def flagged_share(reference, columns, size, samples, rng):
    """(share of `samples` random samples of `size` rows with a finding, findings seen)."""
    from mtmoe.serving.monitor import drift_findings

    n = len(next(iter(columns.values())))
    found, kinds = 0, {}
    for _ in range(samples):
        findings = drift_findings(reference, _sample(columns, rng.choice(n, size, replace=False)))
        found += bool(findings)
        for finding in findings:
            kinds[finding.split(":")[0]] = kinds.get(finding.split(":")[0], 0) + 1
    return found / samples, kinds


def logged_run(model, data, texts, folder):
    """Logs `texts` through the server's RequestLog with the model's answers, then runs `mtmoe
    monitor` on the log: (exit status, its output)."""
    from mtmoe.serving.predict import Predictor
    from mtmoe.serving.request_log import RequestLog

    predictor, log = Predictor(model), RequestLog(folder)
    for start in range(0, len(texts), 32):
        batch = texts[start:start + 32]
        log.offer(batch, predictor.outputs(batch), version=0)
    log.close()
    result = subprocess.run(mtmoe_command("monitor", "--requests", folder, "--serving-dir", model,
                                          "--data", data), capture_output=True, text=True)
    return result.returncode, result.stdout.strip().splitlines()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    work = os.path.join(ROOT, "bench", "work", "oos", "banking77")
    parser.add_argument("--model", default=os.path.join(work, "init-42", "serving_model"))
    parser.add_argument("--data", default=os.path.join(work, "data"))
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()

    import mtmoe  # noqa: F401
    from mtmoe.serving.monitor import (LABEL_DISTANCE, NUMERIC_DIVERGENCE, eval_texts, features)
    from mtmoe.serving.predict import Predictor

    predictor = Predictor(args.model)
    reference = features(predictor, eval_texts(args.data))
    own = _texts(os.path.join(args.shared, "banking77", "test.jsonl"))
    other = _texts(os.path.join(args.shared, "clinc150", "test.jsonl"))
    columns = {"banking77 test (in distribution)": features(predictor, own),
               "clinc150 test (changed distribution)": features(predictor, other)}
    rng = np.random.default_rng(0)
    rates = {}
    for name, values in columns.items():
        for size in SIZES:
            share, kinds = flagged_share(reference, values, size, args.samples, rng)
            rates[f"{name}, {size} texts"] = {"flagged": share, "findings": kinds}
            print(f"{name}, {size} texts: {share:.0%} of {args.samples} samples flagged {kinds}",
                  flush=True)
    end_to_end = {}
    for name, texts in (("banking77 test", own[:500]), ("clinc150 test", other[:500])):
        with tempfile.TemporaryDirectory() as folder:
            status, lines = logged_run(args.model, args.data, texts, folder)
        end_to_end[name] = {"exit": status, "output": lines}
        print(f"mtmoe monitor on logged {name}: exit {status}", *lines, sep="\n  ", flush=True)
    write_result("monitor", thresholds={"label_distance": LABEL_DISTANCE,
                                        "numeric_divergence": NUMERIC_DIVERGENCE},
                 model=os.path.relpath(args.model, ROOT), samples=args.samples, rates=rates,
                 end_to_end=end_to_end)


if __name__ == "__main__":
    sys.exit(main())
