"""What TF Serving needs from a pushed model, checked without TF Serving: ops, warmup, config files."""
import os

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.compat import tf_text_ops, unsupported_ops
from serving.deploy import BATCHING_CONFIG_FILE, MODEL_CONFIG_FILE, BatchingParameters
from serving.export import WARMUP_FILE


def _version(pipeline_run):
    return pipeline_run["summary"]["pushed_model"]


def test_pushed_model_uses_only_ops_the_stock_serving_image_has(pipeline_run, cli):
    assert unsupported_ops(_version(pipeline_run)) == []
    result = cli("export-check", pipeline_run["work"] / "serving_model")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "core TensorFlow or tensorflow-text 2.12.1 ops" in result.stdout


def test_a_model_with_a_newer_tf_text_op_fails_the_check(tmp_path, cli):
    assert "TFText>Utf8Binarize" not in tf_text_ops()  # added to tensorflow-text after 2.12

    class Binarize(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, words):
            return tf_text.utf8_binarize(words)

    module = Binarize()
    tf.saved_model.save(module, str(tmp_path / "model"),
                        signatures={"serving_default": module.__call__})
    assert unsupported_ops(str(tmp_path / "model")) == ["TFText>Utf8Binarize"]
    result = cli("export-check", tmp_path / "model")
    assert result.returncode == 2 and "TFText>Utf8Binarize" in result.stderr


def test_warmup_requests_are_prediction_logs_the_model_answers(pipeline_run):
    version = _version(pipeline_run)
    records = list(tf.data.TFRecordDataset(os.path.join(version, WARMUP_FILE)).as_numpy_iterator())
    assert 2 <= len(records) <= 1000
    serve = tf.saved_model.load(version).signatures["serving_default"]
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        texts = tf.make_ndarray(request.inputs["text"])
        assert texts.dtype == object and all(t.decode() for t in texts)
        outputs = serve(text=tf.constant(texts))
        assert outputs["intent_label"].shape[0] == len(texts)


def test_deployment_files_parse_with_the_serving_protos(pipeline_run):
    folder = os.path.dirname(pipeline_run["summary"]["serving_config"][MODEL_CONFIG_FILE])
    with open(os.path.join(folder, MODEL_CONFIG_FILE)) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    model, = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("mtmoe", "/models/mtmoe",
                                                                  "tensorflow")
    with open(os.path.join(folder, BATCHING_CONFIG_FILE)) as f:
        batching = text_format.Parse(f.read(), BatchingParameters())
    assert batching.max_batch_size.value == 32 and batching.num_batch_threads.value >= 1
    assert np.all(np.diff(list(batching.allowed_batch_sizes) or [0]) >= 0)
