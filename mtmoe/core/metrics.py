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


# Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15).
CALIBRATION_BINS = 15


def calibration_counts(confidence, hit, nll) -> Dict[str, float]:
    """The calibration counts of one or more predictions (arrays of confidences, 0/1 hits and
    negative log-likelihoods): per confidence bin, the count, summed confidence and hits (for ECE
    and the reliability plot), and the summed negative log-likelihood."""
    confidence, hit = np.atleast_1d(confidence).astype(np.float64), np.atleast_1d(hit)
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    counts = {"nll_sum": float(np.sum(nll)), "predictions": int(len(confidence))}
    for b in np.unique(bins):
        inside = bins == b
        counts.update({f"bin{b}_n": int(inside.sum()),
                       f"bin{b}_confidence": float(confidence[inside].sum()),
                       f"bin{b}_hits": float(hit[inside].sum())})
    return counts


def calibration_scores(counts: Dict[str, float]) -> Dict[str, float]:
    """Expected calibration error (sum over bins of |hits - confidence| / predictions) and mean
    negative log-likelihood from calibration_counts' sums."""
    total = max(counts.get("predictions", 0), 1)
    gap = sum(abs(counts.get(f"bin{b}_hits", 0.0) - counts.get(f"bin{b}_confidence", 0.0))
              for b in range(CALIBRATION_BINS))
    return {"ece": gap / total, "nll": counts.get("nll_sum", 0.0) / total}


def reliability(counts: Dict[str, float]) -> List[Dict[str, float]]:
    """Each non-empty bin's mean confidence, accuracy and count: the reliability diagram."""
    rows = []
    for b in range(CALIBRATION_BINS):
        n = counts.get(f"bin{b}_n", 0)
        if n:
            rows.append({"low": b / CALIBRATION_BINS, "high": (b + 1) / CALIBRATION_BINS,
                         "confidence": counts[f"bin{b}_confidence"] / n,
                         "accuracy": counts[f"bin{b}_hits"] / n, "count": n})
    return rows


# Probabilities are floored (softmax) or clipped (sigmoid) here before their log or logit is
# taken, in the temperature's fit and in the serving graph alike: float32 holds 1 - 1e-7, not less.
PROBABILITY_FLOOR = 1e-30
SIGMOID_CLIP = 1e-7


def calibration_logits(probabilities: np.ndarray, binary: bool) -> np.ndarray:
    """What a temperature divides: log-probabilities (softmax) or logits (sigmoid)."""
    p = np.asarray(probabilities, np.float64)
    if binary:
        p = np.clip(p, SIGMOID_CLIP, 1 - SIGMOID_CLIP)
        return np.log(p) - np.log1p(-p)
    return np.log(np.maximum(p, PROBABILITY_FLOOR))


def fit_temperature(log_scores: np.ndarray, targets: np.ndarray, binary: bool = False) -> float:
    """The temperature T minimising the negative log-likelihood of `targets` under
    softmax(log_scores / T) ([N, C] log-probabilities, [N] class ids), or with `binary`,
    sigmoid(log_scores / T) ([N, C] logits, [N, C] 0/1 targets): temperature scaling (Guo et
    al. 2017), a golden-section search over log T in [1/20, 20]. 1.0 without data."""
    log_scores, targets = np.asarray(log_scores, np.float64), np.asarray(targets)
    if not len(log_scores):
        return 1.0

    def nll(log_t: float) -> float:
        scaled = log_scores / np.exp(log_t)
        if binary:  # -log sigmoid(z) = softplus(-z)
            return float(np.mean(np.logaddexp(0, -scaled) * targets
                                 + np.logaddexp(0, scaled) * (1 - targets)))
        shifted = scaled - scaled.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=-1))
        return float(np.mean(log_norm - shifted[np.arange(len(targets)), targets]))

    low, high = np.log(1 / 20), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(60):
        if nll(a) < nll(b):
            high, b = b, a
            a = high - ratio * (high - low)
        else:
            low, a = a, b
            b = low + ratio * (high - low)
    return float(np.exp((low + high) / 2))


def accepted(probabilities: np.ndarray, reject_below: float) -> np.ndarray:
    """[N] whether each text is in scope under the rejection rule: its arg-max is not the
    out-of-scope class (the last) and its top in-scope probability reaches `reject_below`. The
    serving graph's rule (mtmoe.trainer.heads.in_scope) is this one."""
    p = np.asarray(probabilities, np.float64)
    return (p.argmax(axis=-1) != p.shape[-1] - 1) & (p[:, :-1].max(axis=-1) >= reject_below)


# Rejection thresholds tried on the eval split where it has out-of-scope texts: 0, 0.005, ..., 0.995.
REJECTION_THRESHOLDS = tuple(round(0.005 * i, 3) for i in range(200))


def choose_rejection_threshold(probabilities: np.ndarray, labels: np.ndarray,
                               rejected_in_scope: float) -> Dict[str, float]:
    """The rejection threshold for one classification task from its eval split's (calibrated)
    probabilities [N, C] and labels [N] (the out-of-scope class is the last, C - 1). With
    out-of-scope texts in eval: the threshold with the best mean of in-scope accuracy (a rejected
    in-scope text is an error) and out-of-scope recall, both equally weighted whatever their
    counts; of equal ones, the lowest. Without: the one that rejects `rejected_in_scope` of the
    in-scope eval texts. Returns the threshold, the criterion and both rates at it."""
    p, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    out_of_scope = labels == p.shape[-1] - 1
    right = p.argmax(axis=-1) == labels

    def rates(threshold):
        accept = accepted(p, threshold)
        return (float(np.mean(accept[~out_of_scope] & right[~out_of_scope])) if (~out_of_scope).any() else 0.0,
                float(np.mean(~accept[out_of_scope])) if out_of_scope.any() else 0.0)

    if out_of_scope.any():
        threshold = max(REJECTION_THRESHOLDS, key=lambda t: (round(sum(rates(t)) / 2, 12), -t))
        criterion = "best mean of in-scope accuracy and out-of-scope recall on eval"
    else:
        top = p[~out_of_scope, :-1].max(axis=-1)
        threshold = float(np.quantile(top, rejected_in_scope)) if len(top) else 0.0
        criterion = f"rejects {rejected_in_scope:g} of the in-scope eval texts"
    in_scope_accuracy, recall = rates(threshold)
    return {"reject_below": threshold, "criterion": criterion,
            "eval_in_scope_accuracy": in_scope_accuracy, "eval_out_of_scope_recall": recall,
            "eval_out_of_scope_texts": int(out_of_scope.sum())}


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
