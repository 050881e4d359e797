"""A custom TFX component that scores the test split once, after the Evaluator.

The test split never steers training or blessing; its per-task metrics go into the run summary. Counting
uses the same task-type functions as the Evaluator's TFMA metric, so the two agree on the same data.
"""
import json
import os

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from mtmoe.config import Config
from mtmoe.tasks import TaskScorer

METRICS_FILE = "metrics.json"
TEST_SPLIT = "test"
BATCH_SIZE = 256


class TestMetrics(types.Artifact):
    """Per-task metrics on the test split, as METRICS_FILE."""

    TYPE_NAME = "MtmoeTestMetrics"


def score_examples(saved_model, serialized_batches, tasks):
    """Per-task metrics and overall accuracy of a loaded SavedModel over serialized tf.Examples."""
    predict = saved_model.signatures["serving_examples"]
    transform = saved_model.signatures["transform_features"]
    scorer = TaskScorer(tasks)
    for batch in serialized_batches:
        scorer.add({k: v.numpy() for k, v in transform(examples=batch).items()},
                   {k: v.numpy() for k, v in predict(examples=batch).items()})
    return scorer.result()


def read_split(examples_artifact, split: str, batch_size: int = BATCH_SIZE):
    import tensorflow as tf

    uri = artifact_utils.get_split_uri([examples_artifact], split)
    files = tf.io.gfile.glob(os.path.join(uri, "*"))
    return tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)


@component
def TestScorer(examples: InputArtifact[standard_artifacts.Examples],
               model: InputArtifact[standard_artifacts.Model],
               test_metrics: OutputArtifact[TestMetrics],
               config: Parameter[str]):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses

    tasks = Config.from_dict(json.loads(config)).tasks
    saved_model = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    scores = score_examples(saved_model, read_split(examples, TEST_SPLIT), tasks)
    with tf.io.gfile.GFile(os.path.join(test_metrics.uri, METRICS_FILE), "w") as f:
        json.dump(scores, f, indent=1)
