"""The run report's figures, drawn with matplotlib into PNG files."""
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on a training machine
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from mtmoe.core.decay import SERVED_PREFIX  # noqa: E402


def _save(figure, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _heatmap(axes, values: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str,
             annotate: bool):
    image = axes.imshow(values, cmap="Blues", aspect="auto", vmin=0.0)
    tilted = len(columns) > 4 and max(map(len, columns)) > 3
    axes.set_xticks(range(len(columns)), labels=columns, rotation=45 if tilted else 0,
                    ha="right" if tilted else "center")
    axes.set_yticks(range(len(rows)), labels=rows)
    axes.set_title(title)
    if annotate:
        for (i, j), value in np.ndenumerate(values):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 0.6 * values.max() else "black")
    return image


def confusion_matrix(counts: Dict[str, Dict[str, int]], title: str, path: str) -> str:
    """Rows are gold classes, columns predicted classes; cells are shares of their row (recall on the
    diagonal)."""
    classes = sorted(set(counts) | {p for row in counts.values() for p in row})
    matrix = np.array([[counts.get(g, {}).get(p, 0) for p in classes] for g in classes], float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = _heatmap(axes, shares, classes, classes, title, annotate=len(classes) <= 12)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def reliability_diagram(bins: List[Dict[str, float]], title: str, path: str) -> str:
    """Accuracy against mean confidence per confidence bin (metrics.reliability), bars as wide as
    their bin, with the diagonal a calibrated model follows; each bin's count above its bar."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    lows = [b["low"] for b in bins]
    widths = [b["high"] - b["low"] for b in bins]
    axes.bar(lows, [b["accuracy"] for b in bins], width=widths, align="edge", alpha=0.7,
             edgecolor="black", label="accuracy")
    axes.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black",
              markersize=3, label="mean confidence")
    for b in bins:
        axes.text(b["low"] + (b["high"] - b["low"]) / 2, min(b["accuracy"] + 0.02, 0.97),
                  str(b["count"]), ha="center", fontsize=6)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=7)
    return _save(figure, path)


def training_curves(history: Dict[str, List[float]], task_names: Sequence[str],
                    primary_metrics: Dict[str, str], path: str) -> str:
    """Left: total and per-task losses, train (solid) and validation (dashed). Right: validation
    scores per task and overall accuracy."""
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ["", *task_names]:
        key = f"{name}_loss" if name else "loss"
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                epochs = range(1, len(history[prefix + key]) + 1)
                losses.plot(epochs, history[prefix + key], style, label=prefix + key)
    for key in [f"val_{name}_{primary_metrics[name]}" for name in task_names] + ["val_overall_accuracy"]:
        if key in history:
            scores.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    losses.set_title("loss")
    scores.set_title("validation scores")
    scores.set_ylim(0, 1.02)
    for axes in (losses, scores):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=7)
    return _save(figure, path)


def served_scores(runs: List[dict], task_metrics: Sequence[str], path: str) -> str:
    """Per task, over the runs in time order: the serving model's score on each new span (solid),
    and the newly trained model's eval score (dashed)."""
    figure, axes = plt.subplots(1, len(task_metrics), figsize=(4 * len(task_metrics), 3.4),
                                squeeze=False)
    labels = [f"{run['run_id'][5:16]}\nspan {run['spans'][-1]}" if run["spans"] else run["run_id"][5:16]
              for run in runs]
    for column, name in zip(axes[0], task_metrics):
        for key, style, label in ((SERVED_PREFIX + name, "-o", "serving model on the new span"),
                                  (name, "--s", "new model (eval)")):
            points = [(i, run["metrics"][key]) for i, run in enumerate(runs) if key in run["metrics"]]
            if points:
                column.plot(*zip(*points), style, label=label)
        column.set_xticks(range(len(runs)), labels=labels, fontsize=6)
        column.set_ylim(0, 1.02)
        column.set_title(name)
        column.legend(fontsize=7)
    return _save(figure, path)


def gate_heatmaps(layer: str, routers: Dict[str, Dict[str, List[float]]], path: str) -> str:
    """Per router (task gate): mean gate weight per expert, and each expert's share of the load."""
    names = list(routers)
    experts = [str(i) for i in range(len(next(iter(routers.values()))["mean_gate"]))]
    figure, panels = plt.subplots(1, 2, figsize=(max(8.0, 0.5 * len(experts) * 2 + 3),
                                                 1.0 + 0.5 * len(names)))
    for axes, key, title in ((panels[0], "mean_gate", "mean gate weight"),
                             (panels[1], "load", "expert load")):
        values = np.array([routers[name][key] for name in names])
        image = _heatmap(axes, values, names, experts, f"{layer}: {title}", annotate=len(experts) <= 16)
        axes.set_xlabel("expert")
        figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)
