"""training.distribution: the model trains under tf.distribute, here on two logical CPU devices.

Logical devices must be set before TensorFlow initializes, so the training runs in a fresh process.
"""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import dataclasses, json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import mtmoe
from mtmoe.core.config import load_config
from mtmoe.trainer.distribution import distribution_strategy
from mtmoe.trainer.model import build_model, compile_model


def config_for(trunk):
    config = load_config()
    return dataclasses.replace(config, model=dataclasses.replace(
        config.model, trunk=trunk, embedding_dim=16, ff_dim=16, expert_dim=8, num_heads=2, dropout=0.0,
        num_blocks=1))

rng = np.random.default_rng(0)
sizes, classes = {"token_ids": 40, "char_ids": 20}, {"intent": 5, "slots": 7, "sentiment": 4, "signals": 3}

def batch(config, size=8):
    length, chars = config.text.max_tokens, config.text.max_chars
    ids = rng.integers(1, 40, (size, length)); ids[:, 6:] = 0
    slots = rng.integers(0, 7, (size, length)); slots[:, 6:] = -1
    inputs = {"token_ids": ids, "char_ids": rng.integers(1, 20, (size, length, chars))}
    targets = {"intent": rng.integers(0, 5, size), "slots": slots, "sentiment": rng.integers(0, 4, size),
               "signals": rng.integers(0, 2, (size, 3)).astype("float32")}
    return tf.data.Dataset.from_tensors((inputs, targets))

def train(name, trunk, data):
    keras.backend.clear_session()  # as run_fn does: one process may build models before
    strategy = distribution_strategy(name)
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = compile_model(build_model(config_for(trunk), sizes, classes), config_for(trunk))
    # Adam's first step is lr * g / (|g| + epsilon), about lr * sign(g) with the default epsilon;
    # a large epsilon makes it about lr * g, so that a wrongly scaled gradient shows.
    model.optimizer.epsilon = 1.0
    loss = model.fit(data, epochs=1, verbose=0).history["loss"][0]
    return strategy.num_replicas_in_sync, loss, [w.numpy() for w in model.weights]

data = batch(config_for("dense"))
one, single_loss, single = train("none", "dense", data)
two, mirrored_loss, mirrored = train("mirrored", "dense", data)
moe_replicas, moe_loss, _ = train("mirrored", "deepseek_moe", batch(config_for("deepseek_moe")))
print(json.dumps({"replicas": [one, two, moe_replicas], "losses": [single_loss, mirrored_loss, moe_loss],
                  "max_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))}))
"""


def test_mirrored_training_on_two_devices_matches_one_device():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["replicas"] == [1, 2, 2]
    # The same batch split over two replicas must give the same update as on one device (Keras
    # 3.6 alone sums the replicas' gradients: twice the step). Keras logs replica 0's loss only.
    assert outcome["max_weight_difference"] < 2e-5, outcome  # 3e-4 with summed gradients
    moe = outcome["losses"][2]
    assert moe == moe and moe > 0  # the MoE trunk trains under the strategy too (finite loss)
