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
