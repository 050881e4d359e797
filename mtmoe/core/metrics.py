"""Count-based task metrics on numpy arrays, shared by the Evaluator (TFMA) and test-split scoring.

Each metric accumulates integer counts per example, so that results can be merged across batches and
Beam workers and stay exact.
"""
from typing import Dict, Iterable, List, Sequence, Set, Tuple

import numpy as np

Span = Tuple[str, int, int]


def bio_spans(tags: Sequence[str]) -> Set[Span]:
    """Chunks `(type, start, end)` of a BIO tag sequence, read as conlleval / seqeval (default mode) do.

    A chunk starts at `B-X`, or at `I-X` that does not continue a chunk of type X; it ends before any
    tag that is not `I-` of its own type. `O` and '' (padding) are outside every chunk.
    """
    chunks = set()
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-") if tag not in ("O", "") else ("O", "", "")
        if kind is not None and not (prefix == "I" and label == kind):
            chunks.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, start = label, i
    return chunks


def _chunk_counts(gold_spans: Set[Span], predicted_spans: Set[Span]) -> Dict[str, int]:
    hits = len(gold_spans & predicted_spans)
    return {"tp": hits, "fp": len(predicted_spans) - hits, "fn": len(gold_spans) - hits}


def span_counts(gold: Sequence[str], predicted: Sequence[str]) -> Dict[str, int]:
    return _chunk_counts(bio_spans(gold), bio_spans(predicted))


def span_counts_by_type(gold: Sequence[str], predicted: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """`span_counts` per chunk type: {type: {"tp", "fp", "fn"}}."""
    gold_spans, predicted_spans = bio_spans(gold), bio_spans(predicted)
    return {kind: _chunk_counts({s for s in gold_spans if s[0] == kind},
                                {s for s in predicted_spans if s[0] == kind})
            for kind in {s[0] for s in gold_spans | predicted_spans}}


def f1_from_counts(counts: Dict[str, float]) -> Dict[str, float]:
    tp, fp, fn = counts.get("tp", 0), counts.get("fp", 0), counts.get("fn", 0)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def span_f1(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]) -> Dict[str, float]:
    """Micro span precision / recall / F1 over sentences (conlleval)."""
    total: Dict[str, int] = {"tp": 0, "fp": 0, "fn": 0}
    for g, p in zip(gold, predicted):
        for key, value in span_counts(g, p).items():
            total[key] += value
    return f1_from_counts(total)


def multilabel_counts(gold: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> Dict[str, int]:
    predicted = np.asarray(scores) >= threshold
    gold = np.asarray(gold) > 0.5
    return {"tp": int(np.sum(predicted & gold)), "fp": int(np.sum(predicted & ~gold)),
            "fn": int(np.sum(~predicted & gold))}


# Multi-label decision thresholds tried on the eval split: 0.05, 0.10, ..., 0.95.
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def best_threshold(gold: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold of THRESHOLDS with the best micro-F1 of `scores` [N, C] against
    `gold` [N, C] (rows with an unlabelled -1 left out); of equal ones, the nearest to 0.5."""
    gold, scores = np.asarray(gold), np.asarray(scores)
    labelled = gold.min(axis=-1) >= 0 if gold.size else np.zeros(0, bool)
    gold, scores = gold[labelled], scores[labelled]
    if not len(gold):
        return 0.5
    f1 = {t: f1_from_counts(multilabel_counts(gold, scores, t))["f1"] for t in THRESHOLDS}
    return max(THRESHOLDS, key=lambda t: (round(f1[t], 12), -abs(t - 0.5)))


def logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def add_counts(total: Dict[str, float], counts: Dict[str, float]) -> Dict[str, float]:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value
    return total


def add_nested_counts(total: Dict[str, Dict[str, float]],
                      counts: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    for key, inner in counts.items():
        add_counts(total.setdefault(key, {}), inner)
    return total


def length_bucket_names(boundaries: Sequence[int]) -> List[str]:
    """Slice names for token counts split at `boundaries`: (5, 10) -> ['<=5', '6-10', '>10']."""
    names = [f"<={boundaries[0]}"]
    names += [f"{low + 1}-{high}" for low, high in zip(boundaries, boundaries[1:])]
    return names + [f">{boundaries[-1]}"]
