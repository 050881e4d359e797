"""The Evaluator's TFMA task metric scores what the trainer's validation scoring scores."""
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import util
from tensorflow_model_analysis.metrics import metric_util

from mtmoe.components.evaluation import TaskMetric, build_eval_config
from mtmoe.core.config import TaskConfig
from mtmoe.core.feature_names import LENGTH_BUCKET
from mtmoe.core.tasks import TaskScorer, label_key

SLOTS = TaskConfig("slots", "token_tagging", "slots", min_value=0.5, max_drop=0.02)
TAGS = ["O", "B-date", "I-date", "B-amount", "I-amount", "B-city"]


def _tag_batch(rng, size=60, width=8):
    """Gold and predicted tag rows as the signatures give them: bytes, '' padded; some rows unlabelled,
    and predictions at padded positions that scoring must ignore."""
    gold, predicted = [], []
    for i in range(size):
        length = rng.randint(1, width)
        row = [rng.choice(TAGS) for _ in range(length)]
        guess = [tag if rng.random() < 0.7 else rng.choice(TAGS) for tag in row]
        if i % 10 == 0:
            row = [""] * length  # unlabelled example
        gold.append([t.encode() for t in row] + [b""] * (width - length))
        predicted.append([t.encode() for t in guess] + [b"B-city"] * (width - length))
    return np.array(gold), np.array(predicted)


def _assert_tfma_scores(eval_config, gold, predicted, expected, metric=None, output="slots_tags",
                        other_outputs=None):
    """Runs the TFMA computation in a Beam pipeline over per-example extracts (with the model's
    `other_outputs` beside `output`); its output must equal `expected`."""
    metric = metric or TaskMetric(task_type="token_tagging", name="span_f1")
    computation, = metric.computations(eval_config=eval_config, output_names=[output])
    other_outputs = other_outputs or {}
    extracts = [{"labels": {output: g},
                 "predictions": {output: p, **{k: v[i] for k, v in other_outputs.items()}},
                 "example_weights": {output: np.array([1.0])}}
                for i, (g, p) in enumerate(zip(gold, predicted))]

    def check(results):
        (_, values), = results
        found = {key.name: value for key, value in values.items()}
        assert set(found) == set(expected), found
        for metric, value in expected.items():
            assert found[metric] == pytest.approx(value, abs=1e-12), (metric, found, expected)

    with beam.Pipeline() as pipeline:
        result = (pipeline
                  | beam.Create(extracts)
                  | beam.Map(metric_util.to_standard_metric_inputs)
                  | beam.Map(lambda inputs: ((), inputs))
                  | beam.CombinePerKey(computation.combiner))
        util.assert_that(result, check)


def test_tfma_span_f1_equals_the_trainers_span_f1_on_the_same_predictions():
    gold, predicted = _tag_batch(random.Random(7))
    # The trainer's validation scores (trainer/callbacks.py) and test scoring both use TaskScorer.
    scorer = TaskScorer([SLOTS])
    for start in range(0, len(gold), 16):
        scorer.add({label_key(SLOTS): gold[start:start + 16]},
                   {"slots_tags": predicted[start:start + 16]})
    trainer_scores = scorer.result()["slots"]
    assert 0.2 < trainer_scores["span_f1"] < 0.95  # a real, partial score

    _assert_tfma_scores(build_eval_config([SLOTS]), gold, predicted, trainer_scores)


def test_eval_config_gates_every_task_on_the_overall_slice_and_slices_by_length():
    intent = TaskConfig("intent", "classification", "intent", min_value=0.8, max_drop=0.01)
    eval_config = build_eval_config([intent, SLOTS])
    assert [list(spec.feature_keys) for spec in eval_config.slicing_specs] == [[], [LENGTH_BUCKET]]
    gated = {}
    for spec in eval_config.metrics_specs:
        for metric in spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                assert [s.feature_keys for s in per_slice.slicing_specs] == [[]]  # overall only
                threshold = per_slice.threshold
                gated[spec.output_names[0]] = (threshold.value_threshold.lower_bound.value,
                                               threshold.change_threshold.absolute.value)
    assert gated == {"intent": (0.8, -0.01), "slots_tags": (0.5, -0.02)}


def test_tfma_scores_a_task_that_answers_out_of_scope_on_the_models_in_scope_output():
    """The in-scope answer is the model's `<task>_in_scope` output beside its probabilities; the
    Evaluator's scores equal test scoring's on the same predictions."""
    intent = TaskConfig("intent", "classification", "intent", out_of_scope_label="oos",
                        reject_below="auto")
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(4), 80)
    gold = rng.integers(0, 4, 80)  # class 3, the last, is out of scope
    answers = rng.random(80) < 0.7
    scorer = TaskScorer([intent])
    scorer.add({label_key(intent): gold}, {"intent": probabilities, "intent_in_scope": answers})
    expected = scorer.result()["intent"]
    assert 0 < expected["out_of_scope_recall"] < 1 and 0 < expected["in_scope_accuracy"] < 1
    metric = TaskMetric(task_type="classification", name="accuracy", out_of_scope=True)
    _assert_tfma_scores(build_eval_config([intent]), gold[:, None], probabilities, expected,
                        metric, "intent", {"intent_in_scope": answers[:, None]})


def test_a_baseline_exported_before_in_scope_answers_gets_its_accuracy_and_no_out_of_scope_scores():
    """With a baseline, predictions are keyed by model: the candidate's in-scope answers are read
    from its own outputs; the baseline, exported without them, is scored on what it has (accuracy),
    its out-of-scope scores are NaN (nothing to compare), not 0."""
    import math

    import tensorflow_model_analysis as tfma

    intent = TaskConfig("intent", "classification", "intent", out_of_scope_label="oos",
                        reject_below="auto")
    eval_config = build_eval_config([intent])
    spec = eval_config.model_specs[0]
    del eval_config.model_specs[:]
    eval_config.model_specs.extend([tfma.ModelSpec(name=name, signature_name=spec.signature_name,
                                                   label_keys=spec.label_keys, is_baseline=baseline)
                                    for name, baseline in (("candidate", False), ("baseline", True))])
    metric = TaskMetric(task_type="classification", name="accuracy", out_of_scope=True)
    gold = np.array([[0], [2], [1]])  # class 2, the last, is out of scope
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.1, 0.3, 0.6]])
    answers = np.array([[True], [False], [False]])
    extracts = [metric_util.to_standard_metric_inputs({
        "labels": {"intent": g},
        "predictions": {"candidate": {"intent": p, "intent_in_scope": a}, "baseline": {"intent": p}},
        "example_weights": {"intent": np.array([1.0])}}) for g, p, a in zip(gold, probabilities, answers)]
    scores = {}
    for computation in metric.computations(eval_config=eval_config, model_names=["candidate", "baseline"],
                                           output_names=["intent"]):
        combiner = computation.combiner
        accumulator = combiner.create_accumulator()
        for element in extracts:
            accumulator = combiner.add_input(accumulator, element)
        scores.update({(key.model_name, key.name): value
                       for key, value in combiner.extract_output(accumulator).items()})
    assert scores[("candidate", "accuracy")] == scores[("baseline", "accuracy")] == 2 / 3
    assert scores[("candidate", "in_scope_accuracy")] == 1 / 2  # one of two rejected
    assert scores[("candidate", "out_of_scope_recall")] == 1.0
    assert math.isnan(scores[("baseline", "out_of_scope_recall")])
