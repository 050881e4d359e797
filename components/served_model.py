"""A custom TFX component that scores the model that is serving on the new span, before Transform.

The served model (the latest blessed one, which the Pusher pushed) is scored on the new span's
labelled eval and test examples with the same counting as the Evaluator and TestScorer, and judged
against its own limits (mtmoe.core.decay). Its output's `retrain` property is what the pipeline's
Cond reads: 1 unless `schedule.retrain` is on_decay and the served model holds (and the run is not
forced).
"""
import json
import os

from tfx import types
from tfx.components.example_gen.utils import SPAN_PROPERTY_NAME
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from mtmoe.components.pusher import serving_versions
from mtmoe.core.config import Config
from mtmoe.core.decay import judge
from mtmoe.core.file_names import CONFIG_FILE, EVAL_SCORES_FILE, SERVED_CHECK_FILE

SCORED_SPLITS = ("eval", "test")
RETRAIN_PROPERTY = "retrain"


class ServedModelCheck(types.Artifact):
    """The serving model's scores on a new span and whether to train (SERVED_CHECK_FILE)."""

    TYPE_NAME = "mtmoe.ServedModelCheck"


@component
def ServedModelChecker(examples: InputArtifact[standard_artifacts.Examples],
                       served_check: OutputArtifact[ServedModelCheck],
                       config: Parameter[str],
                       serving_dir: Parameter[str],
                       force: Parameter[int],
                       model: InputArtifact[standard_artifacts.Model] = None):
    """`force`: trains whatever the check finds (`mtmoe run --force`)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses

    from mtmoe.components.test_scoring import read_split, score_examples
    from mtmoe.core.tasks import TaskScorer, task_type

    config = Config.from_dict(json.loads(config))
    span = examples.get_int_custom_property(SPAN_PROPERTY_NAME)
    check = {"span": span, "policy": config.schedule.retrain}
    if model is None:
        check.update(version=None, findings=["no model is serving yet"], holds=False, decayed=False)
    else:
        exported = os.path.join(model.uri, "Format-Serving")
        saved_model = tf.saved_model.load(exported)
        with tf.io.gfile.GFile(os.path.join(exported, CONFIG_FILE)) as f:
            answered = {(t.name, t.type, t.label_field)
                        for t in Config.from_dict(json.load(f)).tasks}
        # The tasks the serving model answers as configured now; the check reads their limits.
        tasks = [t for t in config.tasks if (t.name, t.type, t.label_field) in answered]
        scores, pooled = {}, TaskScorer(tasks)
        for split in SCORED_SPLITS:
            scorer = score_examples(saved_model, read_split([examples], split), tasks)
            scores[split] = scorer.result()
            pooled.merge(scorer)  # eval and test together for the decision
        blessing_file = os.path.join(exported, EVAL_SCORES_FILE)
        at_blessing = {}
        if tf.io.gfile.exists(blessing_file):  # a model exported before it was written has none
            with tf.io.gfile.GFile(blessing_file) as f:
                at_blessing = json.load(f)
        pooled_scores = pooled.result()
        # The newest version in the serving folder: the one TF Serving serves.
        check.update(version=max(serving_versions(serving_dir), default=None), scores=scores,
                     at_blessing=at_blessing,
                     primary={task.name: pooled_scores[task.name][task_type(task).primary_metric]
                              for task in tasks if pooled.labelled[task.name]},
                     **judge(config.tasks, pooled_scores, pooled.labelled, at_blessing,
                             config.schedule.min_examples))
    retrain = config.schedule.retrain != "on_decay" or not check["holds"] or bool(force)
    check["retrain"] = retrain
    with tf.io.gfile.GFile(os.path.join(served_check.uri, SERVED_CHECK_FILE), "w") as f:
        json.dump(check, f, indent=1)
    served_check.set_int_custom_property(RETRAIN_PROPERTY, int(retrain))
