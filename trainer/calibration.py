"""After training, on the eval split: temperature scaling, which makes each classification and
multi-label task's probabilities calibrated (a text given 0.8 is right about 80% of the time) by one
temperature per task (Guo et al. 2017), and the rejection threshold of each task that answers out of
scope. The export applies both (mtmoe.trainer.heads.calibrate, in_scope), so that the Evaluator,
test scoring and every serving path read the same numbers; arg-maxes and multi-label decisions at
0.5 do not move."""
from typing import Dict

import numpy as np

from mtmoe.core.config import MULTILABEL
from mtmoe.core.metrics import (add_counts, calibration_logits, choose_rejection_threshold,
                                fit_temperature)
from mtmoe.core.tasks import task_type
from mtmoe.trainer.heads import head_of


def calibrated_tasks(tasks) -> list:
    return [task for task in tasks if task_type(task).calibrated]


def eval_outputs(model, tasks, evaluation):
    """{task: (probabilities, targets)} of each calibrated task's labelled eval examples: one pass
    of the model, for the temperatures and the rejection thresholds both. Token-tagging outputs are
    left out: they are not calibrated, and length-bucketed batches differ in their token axis."""
    tasks = calibrated_tasks(tasks)
    outputs = {task.name: ([], []) for task in tasks}
    for inputs, targets in evaluation:
        probabilities = model(inputs, training=False)
        for task in tasks:
            target = np.asarray(targets[task.name])
            labelled = target.reshape(len(target), -1).min(axis=-1) >= 0
            outputs[task.name][0].append(np.asarray(probabilities[task.name])[labelled])
            outputs[task.name][1].append(target[labelled])
    return {name: (np.concatenate(p), np.concatenate(t)) for name, (p, t) in outputs.items()}


def _scores(task, probabilities, targets) -> Dict[str, float]:
    counts = {}
    for probability, target in zip(probabilities, targets):
        add_counts(counts, task_type(task).count(target, probability) or {})
    return {metric: task_type(task).score(counts)[metric] for metric in ("ece", "nll")}


def fit_temperatures(outputs, tasks) -> Dict[str, dict]:
    """{task: {"temperature", and the eval split's "ece" / "nll" "before" and "after"}} for each
    calibrated task with labelled eval examples; `outputs`: eval_outputs'."""
    import tensorflow as tf

    fitted = {}
    for task in calibrated_tasks(tasks):
        name, (probabilities, targets) = task.name, outputs[task.name]
        if not len(targets):
            continue
        binary = task.type == MULTILABEL
        targets = targets.astype(np.float64) if binary else targets.astype(np.int64)
        wrong = (((probabilities >= 0.5) != (targets > 0.5)).any() if binary
                 else (probabilities.argmax(axis=-1) != targets).any())
        if not wrong:  # the fit would sharpen every answer to certainty: nothing to learn from
            fitted[name] = {"temperature": 1.0, "note": "no wrong answer on eval: not calibrated"}
            continue
        temperature = fit_temperature(calibration_logits(probabilities, binary), targets, binary)
        after = head_of(task).calibrated(tf.constant(probabilities, tf.float32), temperature).numpy()
        before, now = _scores(task, probabilities, targets), _scores(task, after, targets)
        fitted[name] = {"temperature": temperature,
                        **{f"{metric}_before": before[metric] for metric in before},
                        **{f"{metric}_after": now[metric] for metric in now}}
    return fitted


def choose_rejections(outputs, tasks, temperatures: Dict[str, float]) -> Dict[str, dict]:
    """{task: {"reject_below", and how it was chosen}} for each task that answers out of scope:
    its configured threshold, 0 with `off` (the out-of-scope class alone answers), or with `auto`
    one chosen on the eval split's calibrated probabilities (choose_rejection_threshold)."""
    import tensorflow as tf

    tasks = [task for task in tasks if task.answers_out_of_scope]
    chosen = {task.name: {"reject_below": 0.0 if task.reject_below == "off" else task.reject_below,
                          "criterion": "configured"} for task in tasks}
    for task in (task for task in tasks if task.reject_below == "auto"):
        name, (probabilities, targets) = task.name, outputs[task.name]
        if name in temperatures:
            probabilities = head_of(task).calibrated(tf.constant(probabilities, tf.float32),
                                                     temperatures[name]).numpy()
        chosen[name] = choose_rejection_threshold(probabilities, targets.astype(np.int64),
                                                  task.rejected_in_scope)
    return chosen
