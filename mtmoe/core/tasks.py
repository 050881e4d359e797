"""The registry of task types, without TensorFlow: what every stage needs to know about a type
besides its graph code (its primary metric, its serving outputs, how its predictions read as JSON and
how they are counted into metrics by the Evaluator, test scoring and validation).

The TensorFlow side of a type (label ids in Transform, targets, output layer, loss and Keras metrics
in the Trainer, decoding in the serving graph) is in mtmoe.trainer.heads. Adding a task type means
adding one class here, one there, and its name in mtmoe.core.config.TASK_TYPE_NAMES.

Label conventions shared by all stages: Transform maps label strings to ids through a vocabulary with
one reserved id for labels it never saw (the last class, named UNKNOWN_LABEL), and writes -1 where a
label is absent. A -1 target means "unlabelled": it adds nothing to the loss or the metrics.
"""
from typing import Dict, List, Optional

import numpy as np

from mtmoe.core import metrics
from mtmoe.core.config import CLASSIFICATION, MULTILABEL, TOKEN_TAGGING, TaskConfig
from mtmoe.core.feature_names import OVERALL, TOKENS

UNLABELLED = -1
UNKNOWN_LABEL = "<unknown>"
OBJECTIVE = "objective"


def label_key(task) -> str:
    """Transformed feature (and TFMA label key) holding a task's labels."""
    return f"{task.name}_label"


def label_vocabulary_name(task) -> str:
    return f"{task.name}_labels"


# The scores of a classification task that answers out of scope, beside its accuracy.
OUT_OF_SCOPE_METRICS = ("in_scope_accuracy", "out_of_scope_recall", "out_of_scope_precision")


def in_scope_output(task) -> str:
    """The served output saying, for a task that answers out of scope, whether each text is in
    scope."""
    return f"{task.name}_in_scope"


class Classification:
    """One label per example: softmax over the label vocabulary, accuracy."""

    primary_metric = "accuracy"
    decoded_outputs = ("label", "score")
    per_token = False  # one target per example
    calibrated = True  # temperature-scaled after training (mtmoe.trainer.calibration)

    def prediction_json(self, task, outputs, i):
        answer = {"label": _text(outputs[f"{task.name}_label"][i]),
                  "score": float(outputs[f"{task.name}_score"][i])}
        if in_scope_output(task) in outputs:
            answer["in_scope"] = bool(outputs[in_scope_output(task)][i])
        return answer

    def draft_label(self, task, answer):
        """The label a logged answer suggests: the out-of-scope label for a text the model
        declined (unlabelled where the task has none), nothing for the reserved unknown class."""
        if answer.get("in_scope") is False:
            return task.out_of_scope_label or None
        return None if answer["label"] == UNKNOWN_LABEL else answer["label"]

    def eval_output(self, task):
        return task.name

    def count(self, label, prediction, in_scope=None) -> Optional[Dict[str, float]]:
        """Accuracy's counts, the top label's calibration counts (its probability against whether
        it is right) and, given the served in-scope answer of a task that answers out of scope,
        its counts: a gold label of the last class (the out-of-scope one) is out of scope."""
        label = int(np.asarray(label).reshape(-1)[0])
        if label < 0:
            return None
        probabilities = np.asarray(prediction, np.float64).reshape(-1)
        correct = int(np.argmax(probabilities) == label)
        nll = -np.log(max(probabilities[label], 1e-12))
        counts = {"correct": correct, "total": 1,
                  **metrics.calibration_counts(probabilities.max(), correct, nll)}
        if in_scope is not None:
            accepted = bool(np.asarray(in_scope).reshape(-1)[0])
            if label == len(probabilities) - 1:
                counts.update(out_of_scope_total=1, out_of_scope_caught=int(not accepted))
            else:
                counts.update(in_scope_total=1, in_scope_correct=int(accepted and correct),
                              in_scope_rejected=int(not accepted))
        return counts

    def exact(self, label, prediction) -> Optional[bool]:
        counts = self.count(label, prediction)
        return None if counts is None else bool(counts["correct"])

    def score(self, counts, out_of_scope: bool = False):
        """Accuracy, ECE and NLL; with `out_of_scope` (a task that answers out of scope), the
        in-scope accuracy (over in-scope texts; a rejected one is an error) and out-of-scope
        recall and precision."""
        scores = {"accuracy": counts.get("correct", 0) / max(counts.get("total", 0), 1),
                  "examples": counts.get("total", 0), **metrics.calibration_scores(counts)}
        if out_of_scope and not any(key in counts for key in ("in_scope_total", "out_of_scope_total")):
            # No in-scope answer counted (a model exported before it had them): no such scores.
            scores.update(dict.fromkeys(OUT_OF_SCOPE_METRICS, float("nan")))
        elif out_of_scope:  # NaN where undefined: no out-of-scope texts, or none rejected
            caught = counts.get("out_of_scope_caught", 0)
            rejected = caught + counts.get("in_scope_rejected", 0)
            scores.update(
                in_scope_accuracy=counts.get("in_scope_correct", 0) / max(counts.get("in_scope_total", 0), 1),
                out_of_scope_recall=(caught / counts["out_of_scope_total"]
                                     if counts.get("out_of_scope_total") else float("nan")),
                out_of_scope_precision=caught / rejected if rejected else float("nan"))
        return scores

    breakdown_kind = "confusion"

    def breakdown(self, label, prediction, class_names) -> Optional[Dict[str, Dict[str, int]]]:
        """{gold class: {predicted class: 1}}: one cell of the confusion matrix."""
        label = int(np.asarray(label).reshape(-1)[0])
        if label < 0:
            return None
        return {class_names[label]: {class_names[int(np.argmax(prediction))]: 1}}


class Multilabel:
    """Any number of labels per example: one sigmoid per label, micro-F1 at 0.5 (the Trainer
    folds the threshold chosen on eval into the scores, so that 0.5 is the decision threshold)."""

    primary_metric = "micro_f1"
    decoded_outputs = ("labels", "scores")
    per_token = False
    calibrated = True

    def prediction_json(self, task, outputs, i, threshold=0.5):
        """The labels whose score reaches the threshold, best first."""
        pairs = zip(outputs[f"{task.name}_labels"][i], outputs[f"{task.name}_scores"][i])
        chosen = [(_text(label), float(score)) for label, score in pairs if score >= threshold]
        return {"labels": [label for label, _ in chosen], "scores": [score for _, score in chosen]}

    def draft_label(self, task, answer):
        """The predicted labels; none predicted leaves the example unlabelled (an empty list
        would read as unlabelled anyway)."""
        return [label for label in answer["labels"] if label != UNKNOWN_LABEL] or None

    def eval_output(self, task):
        return task.name

    def count(self, label, prediction) -> Optional[Dict[str, float]]:
        """Micro-F1's counts and each label's calibration counts (its score against whether it is
        gold: a sigmoid is a probability of its own)."""
        label = np.asarray(label)
        if label.min() < 0:
            return None
        scores = np.clip(np.asarray(prediction, np.float64).reshape(-1), 1e-12, 1 - 1e-12)
        gold = label.reshape(-1) > 0.5
        nll = -np.log(np.where(gold, scores, 1 - scores))
        return {**metrics.multilabel_counts(label, prediction),
                **metrics.calibration_counts(scores, gold, nll)}

    def exact(self, label, prediction) -> Optional[bool]:
        counts = self.count(label, prediction)
        return None if counts is None else counts["fp"] == counts["fn"] == 0

    def score(self, counts):
        scores = metrics.f1_from_counts(counts)
        return {"micro_f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
                **metrics.calibration_scores(counts)}

    breakdown_kind = "per_class"

    def breakdown(self, label, prediction, class_names) -> Optional[Dict[str, Dict[str, int]]]:
        """{label: {"tp", "fp", "fn"}} for each label that is gold or predicted."""
        label = np.asarray(label)
        if label.min() < 0:
            return None
        return {class_names[c]: metrics.multilabel_counts(label[c:c + 1], np.asarray(prediction)[c:c + 1])
                for c in np.flatnonzero((label > 0.5) | (np.asarray(prediction) >= 0.5))}


class TokenTagging:
    """One tag per token (BIO): per-token softmax, span F1 as conlleval counts it."""

    primary_metric = "span_f1"
    decoded_outputs = ("tags", "scores")
    per_token = True  # targets [B, L], one per token
    calibrated = False

    def prediction_json(self, task, outputs, i):
        n = sum(1 for token in outputs[TOKENS][i] if len(token))  # the padding: empty tokens
        return {"tokens": [_text(t) for t in outputs[TOKENS][i][:n]],
                "tags": [_text(t) for t in outputs[f"{task.name}_tags"][i][:n]],
                "scores": [round(float(s), 4) for s in outputs[f"{task.name}_scores"][i][:n]]}

    def draft_label(self, task, answer):
        """The predicted tags as valid BIO: the reserved unknown tag as O, and a span the model
        opened with I-x begun with B-x (as conlleval reads it)."""
        tags, previous = [], "O"
        for tag in answer["tags"]:
            if tag == UNKNOWN_LABEL or not tag:
                tag = "O"
            elif tag.startswith("I-") and previous[2:] != tag[2:]:
                tag = "B-" + tag[2:]
            tags.append(tag)
            previous = tag
        return tags

    def eval_output(self, task):
        return f"{task.name}_tags"

    @staticmethod
    def _labelled_tags(label, prediction):
        """(gold, predicted) tag strings at the labelled positions (gold tag not '')."""
        pairs = [(_text(g), _text(p)) for g, p in zip(np.asarray(label).reshape(-1),
                                                     np.asarray(prediction).reshape(-1))]
        labelled = [(g, p) for g, p in pairs if g]
        return [g for g, _ in labelled], [p for _, p in labelled]

    def count(self, label, prediction) -> Optional[Dict[str, int]]:
        gold, predicted = self._labelled_tags(label, prediction)
        return metrics.span_counts(gold, predicted) if gold else None

    def exact(self, label, prediction) -> Optional[bool]:
        """Every labelled token's tag right (the sentence-level criterion of SLU overall accuracy)."""
        gold, predicted = self._labelled_tags(label, prediction)
        return gold == predicted if gold else None

    def score(self, counts):
        scores = metrics.f1_from_counts(counts)
        return {"span_f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}

    breakdown_kind = "per_class"

    def breakdown(self, label, prediction, class_names) -> Optional[Dict[str, Dict[str, int]]]:
        """{span type: {"tp", "fp", "fn"}}."""
        gold, predicted = self._labelled_tags(label, prediction)
        return metrics.span_counts_by_type(gold, predicted) if gold else None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


TASK_TYPES = {CLASSIFICATION: Classification(), MULTILABEL: Multilabel(), TOKEN_TAGGING: TokenTagging()}


def task_type(task):
    return TASK_TYPES[task.type]


def primary_validation_metric(task) -> str:
    """The Keras history key of a task's primary score on the eval split."""
    return f"val_{task.name}_{task_type(task).primary_metric}"


def task_scores(task, counts) -> Dict[str, float]:
    """A task's scores from its counts, with the out-of-scope ones where its predictions carried
    the in-scope answer (an exported model's, not a training epoch's)."""
    if any(key in counts for key in ("in_scope_total", "out_of_scope_total")):
        return task_type(task).score(counts, out_of_scope=True)
    return task_type(task).score(counts)


def tasks_from_output_names(names) -> list:
    """The tasks a serving signature answers for, read off its output names (`<task>_<output>`),
    for clients that have only the signature."""
    names = set(names)
    tasks = []
    for type_name, kind in TASK_TYPES.items():
        first, *rest = kind.decoded_outputs
        for name in sorted(n for n in names if n.endswith("_" + first)):
            task = name[:-len(first) - 1]
            if all(f"{task}_{output}" in names for output in rest):
                tasks.append(TaskConfig(task, type_name, task))
    return tasks


def prediction_rows(texts, outputs, tasks) -> List[dict]:
    """Decoded serving outputs (columns indexed by example) -> one JSON-ready dict per text."""
    return [{"text": text, **{task.name: task_type(task).prediction_json(task, outputs, i)
                              for task in tasks}}
            for i, text in enumerate(texts)]


def draft_example(logged: dict, tasks, max_tokens: int) -> dict:
    """A logged request (a `prediction_rows` row) as a JSONL example whose labels are the served
    model's answers: a draft for a person to correct before it becomes a span. Token tags go with
    the model's tokens, unless the model may have cut the text (max_tokens of them): then that task
    is left unlabelled rather than labelled for part of the text."""
    example = {"text": logged["text"]}
    for task in tasks:
        answer = logged.get(task.name)
        if not isinstance(answer, dict):
            continue
        kind = task_type(task)
        if kind.per_token:
            if len(answer["tokens"]) >= max_tokens:
                continue
            example["tokens"] = answer["tokens"]
        label = kind.draft_label(task, answer)
        if label is not None:
            example[task.label_field] = label
    return example


def class_names_from_vocabulary(vocabulary: List[str], task) -> List[str]:
    """Output classes of a task: its label vocabulary, then the reserved last class: labels
    training never saw, named after the task's out-of-scope label where it has one (Transform
    gives that label the reserved id)."""
    return list(vocabulary) + [task.out_of_scope_label or UNKNOWN_LABEL]


class TaskScorer:
    """Accumulates per-task scores and overall accuracy over batches of labels and predictions.

    `labels` are keyed by label_key(task), `predictions` by each type's eval_output(task): the forms
    of the `transform_features` and `serving_examples` signatures. The Evaluator's TFMA metric counts
    with the same `count` functions. Given each task's class names, it also accumulates each task's
    breakdown (confusion matrix, or counts per class / span type).
    """

    def __init__(self, tasks, class_names: Optional[Dict[str, List[str]]] = None):
        self.tasks = tasks
        self.class_names = class_names
        self.counts = {task.name: {} for task in tasks}
        self.labelled = {task.name: 0 for task in tasks}  # examples labelled for each task
        self.breakdowns = {task.name: {} for task in tasks}
        self.overall = {"correct": 0, "total": 0}

    def add(self, labels, predictions) -> None:
        size = len(next(iter(labels.values())))
        for i in range(size):
            verdicts = []
            for task in self.tasks:
                kind = task_type(task)
                label, prediction = labels[label_key(task)][i], predictions[kind.eval_output(task)][i]
                answer = predictions.get(in_scope_output(task))
                counts = (kind.count(label, prediction) if answer is None else
                          kind.count(label, prediction, answer[i]))
                metrics.add_counts(self.counts[task.name], counts or {})
                self.labelled[task.name] += counts is not None
                if self.class_names is not None:
                    metrics.add_nested_counts(self.breakdowns[task.name], kind.breakdown(
                        label, prediction, self.class_names[task.name]) or {})
                verdicts.append(kind.exact(label, prediction))
            verdicts = [v for v in verdicts if v is not None]
            if verdicts:
                self.overall["total"] += 1
                self.overall["correct"] += all(verdicts)

    def merge(self, other: "TaskScorer") -> "TaskScorer":
        """Adds another scorer's counts (of the same tasks) to this one's: one score of two splits."""
        for task in self.tasks:
            metrics.add_counts(self.counts[task.name], other.counts[task.name])
            metrics.add_nested_counts(self.breakdowns[task.name], other.breakdowns[task.name])
            self.labelled[task.name] += other.labelled[task.name]
        metrics.add_counts(self.overall, other.overall)
        return self

    def result(self) -> Dict[str, Dict[str, float]]:
        scores = {task.name: task_scores(task, self.counts[task.name]) for task in self.tasks}
        scores[OVERALL] = {"accuracy": self.overall["correct"] / max(self.overall["total"], 1),
                           "examples": self.overall["total"]}
        return scores

    def breakdown(self) -> Dict[str, Dict[str, object]]:
        """{task: {"kind": "confusion" | "per_class", "counts": {row: {column: count}}, and for
        tasks with probabilities, "reliability": metrics.reliability's bins}}."""
        breakdowns = {task.name: {"kind": task_type(task).breakdown_kind,
                                  "counts": self.breakdowns[task.name]} for task in self.tasks}
        for task in self.tasks:
            bins = metrics.reliability(self.counts[task.name])
            if bins:
                breakdowns[task.name]["reliability"] = bins
        return breakdowns


def objective(scores: Dict[str, Dict[str, float]], tasks, weights: Optional[Dict[str, float]] = None
              ) -> float:
    """Weighted mean of each task's primary metric (plain mean without weights; unnamed tasks get 0).

    Unlike the weighted loss, it does not depend on the loss weights, so trials that train with
    different weights are compared on the same scale.
    """
    weights = weights or {task.name: 1.0 for task in tasks}
    total = sum(weights.get(task.name, 0.0) for task in tasks)
    return sum(weights.get(task.name, 0.0) * scores[task.name][task_type(task).primary_metric]
               for task in tasks) / total
