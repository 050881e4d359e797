"""training.distribution: multi_worker for real: two worker processes on 127.0.0.1 run `run_fn`
on the tiny Transform output, as `mtmoe run` (the chief) and `mtmoe train-worker` do.

Each process imports TensorFlow and creates its strategy at start, so every run is a subprocess.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mtmoe.core.cluster import loopback_cluster
from mtmoe.core.config import Config

pytestmark = pytest.mark.slow

# What `run_fn` reads of TFX's FnArgs, over transformed examples written by the fixture below.
SCRIPT = r"""
import sys
import mtmoe  # noqa: F401  the Keras environment before TensorFlow loads
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx.components.util import tfxio_utils
from tfx.types import standard_artifacts

from mtmoe.core.file_names import EXPORT_KEY
from mtmoe.trainer.distribution import distribution_strategy
from mtmoe.trainer.module import run_fn
import mtmoe.trainer.callbacks
import mtmoe.trainer.model
import json, os


# Adam's step is about lr * sign(g) with its tiny epsilon, so rounding noise on a near-zero
# gradient moves a weight by lr either way; with epsilon 1 the step is about lr * g, and a
# wrongly scaled or wrongly split gradient shows in the weights.
class LinearAdamW(mtmoe.trainer.model.ReplicaMeanAdamW):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, epsilon=1.0, **kwargs)


mtmoe.trainer.model.ReplicaMeanAdamW = LinearAdamW
if os.environ.get("FROZEN_CLOCK"):  # this process never sees time pass: training.max_minutes
    mtmoe.trainer.callbacks.TimeLimit.__init__.__defaults__ = (lambda: 0.0,)  # is not its call
if os.environ.get("NO_SERVING_EXPORT"):  # the weights suffice: tracing the serving graph is slow
    import mtmoe.trainer.module
    mtmoe.trainer.module.export_serving_model = lambda *args: None

data, graph, config_file, out = sys.argv[1:5]
with open(config_file) as f:
    config = json.load(f)
distribution_strategy(config["training"]["distribution"])  # first, as `mtmoe run` does
examples = standard_artifacts.Examples()
examples.uri = data
examples.split_names = '["train", "eval"]'


class FnArgs:
    pass


fn_args = FnArgs()
fn_args.train_files = [os.path.join(data, "Split-train", "*")]
fn_args.eval_files = [os.path.join(data, "Split-eval", "*")]
fn_args.transform_graph_path = graph
fn_args.custom_config = {"config": config, EXPORT_KEY: True}
fn_args.hyperparameters = None
fn_args.base_model = None
fn_args.serving_model_dir = os.path.join(out, "model", "Format-Serving")
fn_args.model_run_dir = os.path.join(out, "model_run")
fn_args.data_accessor = DataAccessor(
    tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
    record_batch_factory=None, data_view_decode_fn=None)
run_fn(fn_args)
"""


@pytest.fixture(scope="module")
def transformed_examples(tiny_transform, tmp_path_factory):
    """The tiny transformed rows as a Transform output: 48 train and 16 eval tf.Examples."""
    import tensorflow as tf

    config, tft_output, features, _ = tiny_transform
    spec = tft_output.transformed_feature_spec()
    root = tmp_path_factory.mktemp("transformed")
    for split, rows in (("train", range(0, 48)), ("eval", range(48, 64))):
        os.makedirs(root / f"Split-{split}")
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(str(root / f"Split-{split}" / "data.gz"), options) as writer:
            for i in rows:
                feature = {}
                for name, feature_spec in spec.items():
                    values = np.asarray(features[name][i]).ravel()
                    if feature_spec.dtype == tf.string:
                        feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
                    elif feature_spec.dtype.is_floating:
                        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                    else:
                        feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                writer.write(tf.train.Example(
                    features=tf.train.Features(feature=feature)).SerializeToString())
    return root, tft_output.transform_savedmodel_dir.rsplit("/", 1)[0], config


def _config_file(raw, path, distribution, epochs, max_minutes=0.0):
    """The tiny config, made comparable across replica counts: the dense trunk (an expert's
    capacity is per replica), the tasks every example is labelled for (each replica averages a
    task's loss over its own labelled examples), no word dropout, no warm start."""
    raw["tasks"] = [task for task in raw["tasks"] if task["name"] in ("intent", "slots")]
    raw["model"]["trunk"] = "dense"
    raw["training"].update(distribution=distribution, epochs=epochs, batch_size=16,
                           word_dropout=0.0, warm_start=False, max_minutes=max_minutes)
    path.write_text(json.dumps(Config.from_dict(raw).to_dict()))
    return path


def _start(transformed, config_file, out, tf_config=None, frozen_clock=False, export=True):
    data, graph, _ = transformed
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if frozen_clock:
        env["FROZEN_CLOCK"] = "1"
    if not export:
        env["NO_SERVING_EXPORT"] = "1"
    log = open(f"{out}.log", "w")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(data), graph, str(config_file),
                             str(out)], env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(process, out, timeout):
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"{out} still running after {timeout} s:\n" + _tail(out))
    return code


def _tail(out):
    with open(f"{out}.log") as f:
        return f.read()[-4000:]


def _weights(out):
    with np.load(os.path.join(out, "model", "warm_start", "weights.npz")) as stored:
        return [stored[name] for name in stored.files]


def test_two_workers_train_like_one_process_and_only_the_chief_writes(
        transformed_examples, make_tiny_config, tmp_path):
    """...and stop together at training.max_minutes when the chief's clock says so, though the
    other worker's clock never moves (without the chief's decision it would wait for a step)."""
    cluster = loopback_cluster(2)
    limit = 1e-5  # minutes: passed after the first epoch, of 3 planned
    config = _config_file(make_tiny_config(), tmp_path / "multi.json", "multi_worker", epochs=3,
                          max_minutes=limit)
    outs = [tmp_path / "chief", tmp_path / "worker"]
    workers = [_start(transformed_examples, config, out,
                      {"cluster": cluster, "task": {"type": "worker", "index": i}},
                      frozen_clock=i > 0)
               for i, out in enumerate(outs)]
    single = _start(transformed_examples, _config_file(make_tiny_config(), tmp_path / "one.json", "none",
                                                  epochs=3, max_minutes=limit),
                    tmp_path / "single", export=False)
    for process, out in zip(workers + [single], outs + [tmp_path / "single"]):
        assert _finish(process, out, timeout=600) == 0, _tail(out)

    assert os.listdir(outs[0] / "model" / "Format-Serving")  # the chief's export
    assert not os.path.exists(outs[1])  # the other worker wrote only to temporary folders
    training = json.loads((outs[0] / "model_run" / "training.json").read_text())
    assert training["replicas"] == 2
    assert training["kept_epoch"]["epochs_run"] == 1
    assert "stopped at training.max_minutes" in training["kept_epoch"]["reason"]

    # The global batch (16) split over two workers must step as one process on all 16 examples.
    difference = max(float(np.abs(a - b).max())
                     for a, b in zip(_weights(outs[0]), _weights(tmp_path / "single")))
    assert difference < 1e-4, difference


def test_a_worker_that_dies_fails_the_training_with_a_clear_error(
        transformed_examples, make_tiny_config, tmp_path):
    cluster = loopback_cluster(2)
    config = _config_file(make_tiny_config(), tmp_path / "multi.json", "multi_worker", epochs=200)
    chief_out, worker_out = tmp_path / "chief", tmp_path / "worker"
    chief, worker = (_start(transformed_examples, config, out,
                            {"cluster": cluster, "task": {"type": "worker", "index": i}})
                     for i, out in enumerate((chief_out, worker_out)))
    try:
        deadline = time.monotonic() + 300
        while "Trainer epoch" not in _tail(chief_out):  # training has started on both
            assert chief.poll() is None and time.monotonic() < deadline, _tail(chief_out)
            time.sleep(1)
        worker.kill()
        code = _finish(chief, chief_out, timeout=180)
    finally:
        for process in (chief, worker):
            if process.poll() is None:
                process.kill()
    assert code != 0
    assert "a training worker stopped answering" in _tail(chief_out)
