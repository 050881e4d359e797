"""The served-model check's judgement (mtmoe.core.decay) and the scorer counts it pools."""
import numpy as np

from mtmoe.core.config import Config
from mtmoe.core.decay import check_line, judge
from mtmoe.core.tasks import TaskScorer


def _tasks(**limits):
    """An intent (classification) and slots (tagging) task; `limits`: {task: {field: value}}."""
    return Config.from_dict({"tasks": [
        {"name": "intent", "type": "classification", "label_field": "intent",
         **limits.get("intent", {})},
        {"name": "slots", "type": "token_tagging", "label_field": "slots",
         **limits.get("slots", {})}]}).tasks


def test_a_model_within_every_limit_holds_and_a_task_without_limits_is_not_judged():
    tasks = _tasks(intent={"max_drop": 0.05, "min_value": 0.8})
    verdict = judge(tasks, {"intent": {"accuracy": 0.84}, "slots": {"span_f1": 0.1}},
                    {"intent": 300, "slots": 300}, {"intent": 0.86, "slots": 0.9}, 200)
    assert verdict == {"holds": True, "decayed": False, "findings": [
        "intent accuracy 0.8400 on 300 examples, 0.8600 at its blessing: within its limits"]}


def test_a_drop_beyond_max_drop_or_a_score_below_min_value_is_decay():
    tasks = _tasks(intent={"max_drop": 0.05}, slots={"min_value": 0.5})
    verdict = judge(tasks, {"intent": {"accuracy": 0.80}, "slots": {"span_f1": 0.4}},
                    {"intent": 300, "slots": 250}, {"intent": 0.86, "slots": 0.45}, 200)
    assert verdict["holds"] is False and verdict["decayed"] is True
    assert verdict["findings"] == [
        "intent accuracy 0.8000 on 300 examples, 0.8600 at its blessing: dropped 0.0600, more "
        "than max_drop 0.05",
        "slots span_f1 0.4000 on 250 examples, 0.4500 at its blessing: below min_value 0.5"]
    check = {"version": 17, "span": 3, **verdict}
    assert check_line(check) == ("served model (version 17) decayed on span 3: " + "; ".join(
        verdict["findings"]))


def test_too_few_labelled_examples_cannot_show_that_it_holds():
    """...nor that it decayed: the run trains, as it would without the check."""
    tasks = _tasks(intent={"max_drop": 0.05})
    verdict = judge(tasks, {"intent": {"accuracy": 0.2}}, {"intent": 199}, {"intent": 0.9}, 200)
    assert verdict == {"holds": False, "decayed": False, "findings": [
        "intent accuracy: 199 labelled examples, fewer than schedule.min_examples (200): cannot "
        "show that it holds"]}
    assert judge(tasks, {"intent": {"accuracy": 0.2}}, {"intent": 200}, {}, 200)["holds"] is True


def test_two_merged_scorers_count_as_one_over_both_batches():
    tasks = _tasks()
    rng = np.random.default_rng(0)
    intents = rng.integers(-1, 3, 20)  # -1: unlabelled
    probabilities = rng.random((20, 3))
    tags = np.array([b"O", b"B-a", b"I-a", b"B-b"])
    slots, predicted = tags[rng.integers(0, 4, (20, 5))], tags[rng.integers(0, 4, (20, 5))]
    labels = {"intent_label": intents, "slots_label": slots}
    predictions = {"intent": probabilities, "slots_tags": predicted}

    def batch(rows):
        return ({k: v[rows] for k, v in labels.items()}, {k: v[rows] for k, v in predictions.items()})

    whole, first, second = TaskScorer(tasks), TaskScorer(tasks), TaskScorer(tasks)
    whole.add(*batch(slice(0, 20)))
    first.add(*batch(slice(0, 8)))
    second.add(*batch(slice(8, 20)))
    merged = first.merge(second)
    assert merged.result() == whole.result()
    assert merged.labelled == whole.labelled == {"intent": int((intents >= 0).sum()), "slots": 20}


def test_a_task_the_serving_model_does_not_answer_cannot_hold():
    """A task added to the config after the serving model was trained: not scored, not held."""
    tasks = _tasks(intent={"max_drop": 0.05}, slots={"max_drop": 0.05})
    verdict = judge(tasks, {"intent": {"accuracy": 0.9}}, {"intent": 300}, {"intent": 0.9}, 200)
    assert verdict["holds"] is False and verdict["decayed"] is False
    assert verdict["findings"][1] == ("slots: the serving model does not answer it: cannot show "
                                      "that it holds")
