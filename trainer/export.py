"""The exported SavedModel: Transform graph + Keras model behind explicit signatures.

- `serving_default(text)`: a batch of raw strings -> per task, labels as strings plus scores
  (calibrated: mtmoe.trainer.calibration), whether the text is in scope for the tasks that answer
  out of scope (`<task>_in_scope`), and the `tokens` that token-level outputs align with.
- `serving_examples(examples)`: serialized tf.Examples -> the same, plus each task's raw model output
  under the task name (what the Evaluator scores).
- `transform_features(examples)`: serialized tf.Examples -> per-task labels in the form the Evaluator
  compares with (`<task>_label`) and the text's `length_bucket`, used by TFMA as its preprocessing
  function (the bucket is a slicing feature).

The Transform graph and the Keras model hang off one tf.Module, each by what it needs saved:
- the Keras model's variables, not the model object: its layer objects would add thousands of nodes
  to the object graph and a Keras serving function of their own, which saving, every load and no
  caller need;
- TFT's loader of the Transform graph, tracked as TFT's own Keras layer tracks it, not that layer:
  the layer is a tf_keras model, and tf_keras saves the first model it meets with a default
  signature of its own, traced with autograph through tf_keras' code (half of each export's time,
  for a function no caller uses).
The signatures are traced without autograph: they hold no data-dependent Python control flow, and
converting the Keras and TFT code's Python cost seconds of each export.
"""
import functools
import json
import os

import tensorflow as tf
from tensorflow_transform.saved.saved_transform_io_v2 import SavedModelLoader

from mtmoe.core.feature_names import LENGTH_BUCKET, PAD_ID, TEXT, TOKEN_IDS, TOKENS
from mtmoe.core.file_names import CONFIG_FILE, EVAL_SCORES_FILE, WARMUP_FILE
from mtmoe.core.metrics import length_bucket_names
from mtmoe.core.tasks import label_key
from mtmoe.trainer.features import class_names, cut_to_longest, model_inputs, model_targets
from mtmoe.trainer.heads import calibrate, crf_scores, decode_outputs, head_of
from mtmoe.trainer.text import tokenize

SIGNATURES = ("serving_default", "serving_examples", "transform_features")


class ServingModule(tf.Module):
    def __init__(self, model, tft_output, config, temperatures=None, reject_below=None):
        super().__init__()
        self.model_variables = list(model.variables)
        self._call_model = functools.partial(model, training=False)  # a partial: not tracked
        self._crf = crf_scores(model, config.tasks)
        self._temperatures = dict(temperatures or {})
        self._reject_below = dict(reject_below or {})
        self._transform_graph = SavedModelLoader(tft_output.transform_savedmodel_dir)
        # Its loaded graph, tables and assets, saved with the module (as TFT's layer saves them).
        self.transform_graph_objects = self._transform_graph.__dict__
        self._tasks = config.tasks
        names = {task.name: class_names(tft_output, task) for task in config.tasks}
        self._num_classes = {name: len(v) for name, v in names.items()}
        self._class_names = {name: tuple(v) for name, v in names.items()}
        self._raw_spec = tft_output.raw_feature_spec()
        buckets = config.evaluation.length_buckets
        self._bucket_bounds = tf.constant(buckets, tf.int64)
        self._bucket_names = tf.constant(length_bucket_names(buckets))

    def _predict(self, transformed):
        # The model and the decoder see the batch cut to its longest text (a 10-token request
        # costs 10 tokens, not max_tokens); token-level outputs are padded back to max_tokens.
        inputs, _ = cut_to_longest(model_inputs(transformed))
        probabilities = calibrate(self._tasks, self._call_model(inputs), self._temperatures)
        token_mask = tf.not_equal(inputs[TOKEN_IDS], PAD_ID)
        outputs = decode_outputs(self._tasks, probabilities, self._class_names, token_mask,
                                 pad_to=tf.shape(transformed[TOKEN_IDS])[1],
                                 crf=self._crf,
                                 reject_below=self._reject_below)
        raw = {task.name: outputs.pop(task.name) for task in self._tasks}
        return {TOKENS: transformed[TOKENS], **outputs}, raw

    def _transform_text(self, text):
        return self._transform_graph.apply_transform_model({TEXT: tf.reshape(text, [-1, 1])})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")],
                 autograph=False)
    def serve_text(self, text):
        outputs, _ = self._predict(self._transform_text(text))
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
                 autograph=False)
    def serve_examples(self, examples):
        raw = tf.io.parse_example(examples, {TEXT: self._raw_spec[TEXT]})
        outputs, probabilities = self._predict(self._transform_text(raw[TEXT]))
        return {**outputs, **probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
                 autograph=False)
    def transform_features(self, examples):
        raw = tf.io.parse_example(examples, self._raw_spec)
        transformed = self._transform_graph.apply_transform_model(raw)
        targets = model_targets(transformed, self._tasks, self._num_classes)
        labels = {label_key(task): head_of(task).eval_label(targets[task.name],
                                                              self._class_names[task.name])
                  for task in self._tasks}
        return {**labels, LENGTH_BUCKET: self._length_bucket(raw[TEXT])}

    def _length_bucket(self, text):
        """Tokens per text (before truncation), as the name of its length bucket."""
        counts = tokenize(text).row_lengths()
        return tf.gather(self._bucket_names,
                         tf.searchsorted(self._bucket_bounds, counts, side="left"))


def export_serving_model(model, tft_output, config, export_dir: str, warmup_texts=(),
                         temperatures=None, reject_below=None, eval_scores=None) -> None:
    """`temperatures`: {task: T} of the tasks whose probabilities the graph calibrates;
    `reject_below`: {task: threshold} of the tasks that answer out of scope; `eval_scores`:
    {task: primary score on the eval split}, what a later run's served-model check compares with."""
    module = ServingModule(model, tft_output, config, temperatures, reject_below)
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve_text,
        "serving_examples": module.serve_examples,
        "transform_features": module.transform_features,
    })
    os.makedirs(os.path.join(export_dir, os.path.dirname(CONFIG_FILE)), exist_ok=True)
    # The config the model was trained with, so clients know its tasks (TF Serving ignores this).
    with open(os.path.join(export_dir, CONFIG_FILE), "w") as f:
        json.dump(config.to_dict(), f, indent=1)
    with open(os.path.join(export_dir, EVAL_SCORES_FILE), "w") as f:
        json.dump(eval_scores or {}, f)
    if warmup_texts:
        write_warmup_requests(os.path.join(export_dir, WARMUP_FILE), warmup_texts)


def write_warmup_requests(path: str, texts) -> None:
    """PredictionLog records for `serving_default`: each text alone, then all of them in one batch."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for batch in [[text] for text in texts] + [list(texts)]:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name="serving_default"))
            request.inputs[TEXT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
