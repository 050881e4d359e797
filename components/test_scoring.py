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

METRICS_FILE = "metrics.json"
TEST_SPLIT = "test"
BATCH_SIZE = 256


class TestMetrics(types.Artifact):
    """Per-task metrics on the test split, as METRICS_FILE."""

    TYPE_NAME = "MtmoeTestMetrics"


def score_examples(saved_model, serialized_batches, tasks):
    """Per-task metrics of a loaded SavedModel over batches of serialized tf.Examples."""
    from mtmoe.tasks import label_key, task_type

    predict = saved_model.signatures["serving_examples"]
    transform = saved_model.signatures["transform_features"]
    totals = {task.name: {} for task in tasks}
    for batch in serialized_batches:
        predictions = {k: v.numpy() for k, v in predict(examples=batch).items()}
        labels = {k: v.numpy() for k, v in transform(examples=batch).items()}
        for task in tasks:
            kind = task_type(task)
            for label, prediction in zip(labels[label_key(task)], predictions[kind.eval_output(task)]):
                for key, value in (kind.count(label, prediction) or {}).items():
                    totals[task.name][key] = totals[task.name].get(key, 0) + value
    return {task.name: task_type(task).score(totals[task.name]) for task in tasks}


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
