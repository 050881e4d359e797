"""What TF Serving needs from an exported model, checked without TF Serving: the signatures give what
the Keras model gives, ops, warmup requests, config files."""
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from mtmoe.core.feature_names import PAD_ID, TOKEN_IDS
from mtmoe.core.file_names import WARMUP_FILE
from mtmoe.core.formats import to_tf_example
from mtmoe.core.metrics import accepted
from mtmoe.core.tasks import task_type
from mtmoe.serving.compat import tf_text_ops, unsupported_ops
from mtmoe.serving.deploy import BATCHING_CONFIG_FILE, MODEL_CONFIG_FILE, write_deployment_files
from mtmoe.trainer.features import model_inputs
from mtmoe.trainer.heads import calibrate

pytestmark = pytest.mark.slow

# The fields of tensorflow.serving.BatchingParameters
# (tensorflow_serving/servables/tensorflow/session_bundle_config.proto); wrapped scalars are written
# `name { value: V }`, plain ones `name: V`.
UPSTREAM_BATCHING_FIELDS = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                            "num_batch_threads", "thread_pool_name", "allowed_batch_sizes",
                            "pad_variable_length_inputs"}


def test_serving_examples_gives_the_keras_models_calibrated_outputs_after_a_round_trip(tiny_export):
    """The SavedModel from export_serving_model, loaded back: its raw per-task outputs for
    serialized examples equal the in-memory Keras model's on the same transformed rows, at every
    token of the texts, temperature-scaled where the export was given a temperature (the
    calibration is in the graph, for every consumer); token-level outputs are 0 at padding (the
    export runs the model on the batch cut to its longest text)."""
    config = tiny_export["config"]
    loaded = tf.saved_model.load(tiny_export["version"])
    texts = tiny_export["texts"]
    examples = tf.constant([to_tf_example({"text": text}) for text in texts])
    exported = loaded.signatures["serving_examples"](examples=examples)
    features = {k: v[:len(texts)] for k, v in tiny_export["features"].items()}
    expected = tiny_export["model"](model_inputs(features), training=False)
    tokens = (features[TOKEN_IDS] != PAD_ID)[..., None]
    expected = calibrate(config.tasks, expected, tiny_export["temperatures"])
    assert set(tiny_export["temperatures"]) == {t.name for t in config.tasks
                                                if task_type(t).calibrated}
    for task in config.tasks:
        want = expected[task.name].numpy()
        if task_type(task).per_token:
            want = np.where(tokens, want, 0.0)
            assert exported[task.name].shape == want.shape  # padded back to max_tokens
        np.testing.assert_allclose(exported[task.name].numpy(), want, rtol=1e-5, atol=1e-6,
                                   err_msg=task.name)
    for name, threshold in tiny_export["reject_below"].items():
        answers = exported[f"{name}_in_scope"].numpy()
        assert answers.tolist() == accepted(expected[name].numpy(), threshold).tolist()
        assert 0 < answers.sum() < len(answers)  # the rule rejects some texts, not all


def test_exported_model_uses_only_ops_the_stock_serving_image_has(tiny_export, cli):
    assert unsupported_ops(tiny_export["version"]) == []
    result = cli("export-check", tiny_export["serving_dir"])
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


def test_warmup_requests_are_each_text_alone_then_all_together_and_the_model_answers(tiny_export):
    texts = tiny_export["texts"]
    path = f"{tiny_export['version']}/{WARMUP_FILE}"
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    batches = []
    serve = tf.saved_model.load(tiny_export["version"]).signatures["serving_default"]
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        batch = [t.decode() for t in tf.make_ndarray(request.inputs["text"])]
        batches.append(batch)
        assert serve(text=tf.constant(batch))["intent_label"].shape[0] == len(batch)
    assert batches == [[text] for text in texts] + [texts]


def _text_proto_fields(text: str) -> dict:
    """{field: value} of a flat text proto whose scalars are plain or wrapped (`f { value: v }`;
    a wrapper holding 0 is written `f { }`), after its `#` comment lines."""
    text = re.sub(r"(?m)^#.*$", "", text)
    pattern = r"(\w+)\s*(?::\s*(\S+)|\{\s*(?:value:\s*(\S+)\s*)?\})"
    fields = {name: plain or wrapped or "0" for name, plain, wrapped in re.findall(pattern, text)}
    assert re.sub(pattern, "", text).strip() == "", text  # nothing else in the file
    return fields


def test_deployment_files_follow_the_upstream_protos(tmp_path):
    files = write_deployment_files(str(tmp_path), "mtmoe")
    with open(files[MODEL_CONFIG_FILE]) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    model, = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("mtmoe", "/models/mtmoe",
                                                                  "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1
    with open(files[BATCHING_CONFIG_FILE]) as f:
        batching = _text_proto_fields(f.read())
    assert set(batching) <= UPSTREAM_BATCHING_FIELDS
    assert batching == {"max_batch_size": "32", "batch_timeout_micros": "0",
                        "max_enqueued_batches": "100", "pad_variable_length_inputs": "true"}


def test_a_texts_answer_is_the_same_alone_and_among_256_texts_that_crowd_the_same_experts(tiny_export):
    """Expert capacity applies in training only: through the exported signature, a text's outputs
    do not depend on the texts it is batched with (server-side batching mixes users' requests)."""
    serve = tf.saved_model.load(tiny_export["version"]).signatures["serving_default"]
    text = tiny_export["texts"][0]
    crowd = " ".join(["pay"] * tiny_export["config"].text.max_tokens)  # every token: the same experts
    alone = serve(text=tf.constant([text]))
    for batch in ([text] + [crowd] * 255, [crowd] * 255 + [text]):
        together = serve(text=tf.constant(batch))
        row = batch.index(text)
        for name, value in alone.items():
            if value.dtype == tf.string:
                np.testing.assert_array_equal(together[name][row], value[0], err_msg=name)
            else:
                np.testing.assert_allclose(together[name][row], value[0], atol=1e-5, err_msg=name)
