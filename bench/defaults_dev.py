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
# The recipe at init's epochs differs by dataset: the row screened at (or nearest to) the epochs
# init's token budget gives each (SNIPS 20, Banking77 22, CLINC150 19, NLU++ 100, MixSNIPS 19)
# stands for "recipe, init's epochs" in the leave-one-out check.
RECIPE_AT_INIT_EPOCHS = {"snips": "recipe20", "banking77": "recipe20", "clinc150": "recipe17",
                         "nlupp": "recipe100", "mixsnips": "recipe20"}


def rows(path: str):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def setting_of(dataset: str, label: str) -> str:
    if label == RECIPE_AT_INIT_EPOCHS.get(dataset):
        return "recipe, init's epochs"
    return "sample, 5 epochs (init before)" if label == "init" else label


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
    # The settings screened on more than one dataset, over the datasets that have all of them.
    shared = {s: v for s, v in by_setting.items() if len(v) > 1}
    datasets = [d for d in scores if all(d in v for v in shared.values())]
    everywhere = {s: {d: v[d] for d in datasets} for s, v in shared.items()}
    if len(everywhere) < 2 or len(datasets) < 3:
        return
    print(f"\nleave-one-out over {', '.join(everywhere)}, on {', '.join(datasets)} (the datasets "
          "screened with each):\n")
    print("| left out | chosen on the others | its objective there | best there | gap |")
    print("|---|---|---|---|---|")
    for left_out in datasets:
        others = [d for d in datasets if d != left_out]

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
