"""Whether the model that is serving still holds on a new span (`schedule.retrain: on_decay`).

It holds when, for every task with a limit (`min_value` above 0 or `max_drop` below 1), its primary
score on the new span's labelled eval and test examples meets `min_value` and is at most `max_drop`
below its own score at its blessing (the eval split it was trained beside). A task with fewer
labelled examples than `schedule.min_examples` cannot show that: the run trains. Nothing here
imports TensorFlow: `mtmoe history` and the report read the findings.
"""
import math
from typing import Dict, List, Optional

from mtmoe.core.tasks import task_type

# `mtmoe run`'s exit status when the serving model decayed on the new span and the model trained
# on it was not blessed: nothing serves within its limits, someone must look (a cron job alerts).
DECAYED_AND_REFUSED = 4
# History metrics of the serving model on a run's new span: "served <task> <metric>".
SERVED_PREFIX = "served "


def judge(tasks, scores: Dict[str, Dict[str, float]], labelled: Dict[str, int],
          at_blessing: Dict[str, float], min_examples: int) -> dict:
    """{"holds": every limited task judged and within its limits, "decayed": some task's score
    fails a limit, "findings": one line per limited task}. `scores`: {task: {metric: value}} on
    the new span; `labelled`: {task: labelled examples}; `at_blessing`: {task: primary score}."""
    findings: List[str] = []
    holds, decayed = True, False
    for task in (task for task in tasks if task.has_limit):
        metric = task_type(task).primary_metric
        if task.name not in scores:  # a task added to the config since the model was trained
            holds = False
            findings.append(f"{task.name}: the serving model does not answer it: cannot show "
                            "that it holds")
            continue
        value = scores[task.name].get(metric, float("nan"))
        count = labelled.get(task.name, 0)
        name = f"{task.name} {metric}"
        if count < min_examples or math.isnan(value):
            holds = False
            findings.append(f"{name}: {count} labelled examples, fewer than schedule.min_examples "
                            f"({min_examples}): cannot show that it holds")
            continue
        before = at_blessing.get(task.name)
        failed = _failed_limits(task, value, before)
        decayed |= bool(failed)
        holds &= not failed
        reference = f", {before:.4f} at its blessing" if before is not None else ""
        findings.append(f"{name} {value:.4f} on {count} examples{reference}: "
                        + ("; ".join(failed) if failed else "within its limits"))
    return {"holds": holds, "decayed": decayed, "findings": findings}


def _failed_limits(task, value: float, before: Optional[float]) -> List[str]:
    failed = []
    if value < task.min_value:
        failed.append(f"below min_value {task.min_value:g}")
    if before is not None and before - value > task.max_drop:
        failed.append(f"dropped {before - value:.4f}, more than max_drop {task.max_drop:g}")
    return failed


def check_line(check: dict) -> str:
    """The run's one line about the serving model on the new span."""
    served = f"served model (version {check['version']})" if check.get("version") else "served model"
    span = check["span"]
    if check.get("holds"):
        return f"{served} holds on span {span}: " + "; ".join(check["findings"])
    if check.get("decayed"):
        return f"{served} decayed on span {span}: " + "; ".join(
            line for line in check["findings"] if not line.endswith("within its limits"))
    return f"{served} on span {span}: " + "; ".join(check["findings"])
