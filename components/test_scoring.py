"""A custom TFX component that scores the test split once, after the Evaluator.

The test split never steers training or blessing; its per-task metrics go into the run summary. Counting
uses the same task-type functions as the Evaluator's TFMA metric, so the two agree on the same data.
"""
import json
import os
from typing import List

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from mtmoe.core.config import Config
from mtmoe.core.file_names import METRICS_FILE, BREAKDOWN_FILE
from mtmoe.core.tasks import TaskScorer

TEST_SPLIT = "test"
BATCH_SIZE = 256


class TestMetrics(types.Artifact):
    """Per-task metrics on the test split (METRICS_FILE) and their breakdowns (BREAKDOWN_FILE)."""

    TYPE_NAME = "mtmoe.TestMetrics"  # <namespace>.<Name>: the form Kubeflow Pipelines v2 requires


def score_examples(saved_model, serialized_batches, tasks, class_names=None) -> TaskScorer:
    """Scores a loaded SavedModel over serialized tf.Examples: per-task metrics, overall accuracy
    and, given class names, per-task breakdowns."""
    predict = saved_model.signatures["serving_examples"]
    transform = saved_model.signatures["transform_features"]
    scorer = TaskScorer(tasks, class_names)
    for batch in serialized_batches:
        scorer.add({k: v.numpy() for k, v in transform(examples=batch).items()},
                   {k: v.numpy() for k, v in predict(examples=batch).items()})
    return scorer


def read_split(examples_artifacts: List[types.Artifact], split: str, batch_size: int = BATCH_SIZE):
    """The split of every given Examples artifact (one per span), as batches of serialized records."""
    import tensorflow as tf

    files = [f for artifact in examples_artifacts
             for f in tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([artifact], split), "*"))]
    return tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)


@component
def TestScorer(examples: InputArtifact[List[standard_artifacts.Examples]],
               transform_graph: InputArtifact[standard_artifacts.TransformGraph],
               model: InputArtifact[standard_artifacts.Model],
               test_metrics: OutputArtifact[TestMetrics],
               config: Parameter[str]):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses
    import tensorflow_transform as tft

    from mtmoe.trainer.features import class_names

    tasks = Config.from_dict(json.loads(config)).tasks
    tft_output = tft.TFTransformOutput(transform_graph.uri)
    saved_model = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    scorer = score_examples(saved_model, read_split(examples, TEST_SPLIT), tasks,
                            {task.name: class_names(tft_output, task) for task in tasks})
    for name, value in ((METRICS_FILE, scorer.result()), (BREAKDOWN_FILE, scorer.breakdown())):
        with tf.io.gfile.GFile(os.path.join(test_metrics.uri, name), "w") as f:
            json.dump(value, f, indent=1)
