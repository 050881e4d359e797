"""Evaluator settings built from the task config, and the TFMA metric that scores every task type.

TFMA's built-in metrics count padding positions of token outputs and cannot skip unlabelled examples
per output, so each task is scored by `TaskMetric`, which counts with the same functions as test-split
scoring (mtmoe.core.tasks). Thresholds gate every task, on the overall slice only; every metric is also reported per text-length bucket.
"""
import json
from typing import Dict, Iterable, List

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

from mtmoe.core.config import TaskConfig
from mtmoe.core.feature_names import LENGTH_BUCKET
from mtmoe.core.metrics import add_counts
from mtmoe.core.tasks import TASK_TYPES, label_key, task_type

PREDICT_SIGNATURE = "serving_examples"
TRANSFORM_SIGNATURE = "transform_features"


class TaskMetric(metric_types.Metric):
    """All scores of one task type (e.g. span_f1, precision, recall) from exact per-example counts.

    `name` is the task type's primary metric, the key that thresholds bind to.
    """

    def __init__(self, task_type: str, name: str = "task_metric", out_of_scope: bool = False):
        super().__init__(metric_util.merge_per_key_computations(_task_metric), name=name,
                         task_type=task_type, out_of_scope=out_of_scope)


metric_types.register_metric(TaskMetric)


def _task_metric(name, task_type, out_of_scope=False, eval_config=None, model_name="",
                 output_name="", sub_key=None, aggregation_type=None, class_weights=None,
                 example_weighted=False):
    kind = TASK_TYPES[task_type]
    names = kind.score({}, out_of_scope=True) if out_of_scope else kind.score({})
    keys = {metric: metric_types.MetricKey(name=metric, model_name=model_name,
                                           output_name=output_name, sub_key=sub_key,
                                           example_weighted=example_weighted)
            for metric in names}
    return [metric_types.MetricComputation(
        keys=list(keys.values()), preprocessors=None,
        combiner=_TaskMetricCombiner(keys, task_type, out_of_scope, eval_config, model_name,
                                     output_name))]


class _TaskMetricCombiner(beam.CombineFn):
    """`out_of_scope`: the task answers out of scope; each example's in-scope answer is the
    model's `<output>_in_scope` output."""

    def __init__(self, keys, task_type, out_of_scope, eval_config, model_name, output_name):
        self._keys = keys
        self._task_type = task_type
        self._out_of_scope = out_of_scope
        self._eval_config = eval_config
        self._model_name = model_name
        self._output_name = output_name

    def create_accumulator(self) -> Dict[str, float]:
        return {}

    def add_input(self, accumulator, element):
        kind = TASK_TYPES[self._task_type]
        answer = self._in_scope_answer(element.predictions) if self._out_of_scope else None
        for label, prediction, _ in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=self._model_name,
                output_name=self._output_name, flatten=False, squeeze=False):
            counts = (kind.count(label, prediction) if answer is None else
                      kind.count(label, prediction, answer))
            add_counts(accumulator, counts or {})
        return accumulator

    def _in_scope_answer(self, predictions):
        """The model's `<output>_in_scope` output beside this one (predictions are keyed by model
        first when a baseline is evaluated too); None for a model exported before it had one."""
        if isinstance(predictions, dict) and self._model_name in predictions:
            predictions = predictions[self._model_name]
        answer = predictions.get(f"{self._output_name}_in_scope") if isinstance(predictions, dict) else None
        return None if answer is None else np.asarray(answer)

    def merge_accumulators(self, accumulators: Iterable[Dict[str, float]]):
        merged: Dict[str, float] = {}
        for accumulator in accumulators:
            add_counts(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        kind = TASK_TYPES[self._task_type]
        scores = (kind.score(accumulator, out_of_scope=True) if self._out_of_scope
                  else kind.score(accumulator))
        return {key: scores[metric] for metric, key in self._keys.items()}


def _thresholds(task: TaskConfig) -> List[tfma.PerSliceMetricThreshold]:
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": task.min_value}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -task.max_drop}))
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def build_eval_config(tasks) -> tfma.EvalConfig:
    """One model spec with every task's output and label, one gated metric spec per task, sliced
    overall and by text length."""
    metrics_specs = []
    for task in tasks:
        kind = task_type(task)
        metrics = [
            tfma.MetricConfig(class_name="ExampleCount"),
            # One instance emits every score of the task; the threshold binds to its name.
            tfma.MetricConfig(class_name="TaskMetric", module=__name__,
                              config=json.dumps({"task_type": task.type,
                                                 "name": kind.primary_metric,
                                                 "out_of_scope": task.answers_out_of_scope}),
                              per_slice_thresholds=_thresholds(task)),
        ]
        metrics_specs.append(tfma.MetricsSpec(output_names=[kind.eval_output(task)],
                                              metrics=metrics))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=PREDICT_SIGNATURE,
            preprocessing_function_names=[TRANSFORM_SIGNATURE],
            label_keys={task_type(t).eval_output(t): label_key(t) for t in tasks},
            model_type="tf_generic")],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LENGTH_BUCKET])],
        metrics_specs=metrics_specs,
    )
