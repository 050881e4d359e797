"""The dev sweep behind the defaults, as tables: every screened setting's eval-split scores per
dataset (bench/results/defaults_dev.jsonl, one bench/trainer_only.py run a line, labelled
`<dataset>/<setting>`), and a leave-one-out check of the choice of default among the settings
screened on every dataset.

    python bench/defaults_dev.py [--log bench/results/defaults_dev.jsonl]

Each dataset's score is its `val_objective` (the mean of its tasks' primary metrics, what the
Trainer keeps epochs by). Leave-one-out: for each dataset, the setting with the best mean rank on
the others is chosen, and its score on the left-out dataset is set beside that dataset's best.
"""
import argparse
import json
import os
import statistics

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "defaults_dev.jsonl")
# A setting screened on every dataset under a name of its own: init's epochs rule gave each
# dataset its own count, so `recipe<N>` rows map to "recipe, init's epochs" where N is that count.
INIT_EPOCHS = {"snips": 20, "banking77": 28, "clinc150": 17, "nlupp": 100, "mixsnips": 37}


def rows(path: str):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def setting_of(dataset: str, label: str) -> str:
    if label == f"recipe{INIT_EPOCHS.get(dataset)}":
        return "recipe, init's epochs"
    return label


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=LOG)
    args = parser.parse_args()
    scores = {}
    for row in rows(args.log):
        dataset, label = row["label"].split("/", 1)
        scores.setdefault(dataset, {})[label] = row
    print("| dataset | setting | epoch kept / run | s | eval scores | objective |")
    print("|---|---|---|---|---|---|")
    for dataset, settings in scores.items():
        for label, row in settings.items():
            primary = ", ".join(f"{k} {v:.4f}" for k, v in row["eval"].items()
                                if k.endswith(("_accuracy", "_f1", "_threshold"))
                                and not k.endswith(("token_accuracy", "overall_accuracy")))
            print(f"| {dataset} | {label} | {row['kept_epoch']} / {row['epochs_run']} | "
                  f"{row['seconds']:.0f} | {primary} | {row['eval']['objective']:.4f} |")

    by_setting = {}
    for dataset, settings in scores.items():
        for label, row in settings.items():
            by_setting.setdefault(setting_of(dataset, label), {})[dataset] = row["eval"]["objective"]
    everywhere = {s: v for s, v in by_setting.items() if set(v) == set(scores)}
    if len(everywhere) < 2:
        return
    print(f"\nleave-one-out over the settings screened on all {len(scores)} datasets: "
          f"{', '.join(everywhere)}\n")
    print("| left out | chosen on the others | its objective there | best there | gap |")
    print("|---|---|---|---|---|")
    for left_out in scores:
        others = [d for d in scores if d != left_out]

        def mean_rank(setting):
            return statistics.mean(
                sorted(everywhere, key=lambda s: -everywhere[s][d]).index(setting) for d in others)

        chosen = min(everywhere, key=mean_rank)
        best = max(everywhere, key=lambda s: everywhere[s][left_out])
        print(f"| {left_out} | {chosen} | {everywhere[chosen][left_out]:.4f} | {best} "
              f"{everywhere[best][left_out]:.4f} | "
              f"{everywhere[chosen][left_out] - everywhere[best][left_out]:+.4f} |")


if __name__ == "__main__":
    main()
