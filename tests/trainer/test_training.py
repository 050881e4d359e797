"""What the Trainer's fit keeps: the weights of the epoch with the best val_objective, stopping after
`training.patience` epochs without a better one, or at `training.max_minutes`."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtmoe.core.config import load_config
from mtmoe.core.metrics import f1_from_counts, multilabel_counts
from mtmoe.trainer.calibration import eval_outputs, fit_temperatures
from mtmoe.trainer.callbacks import TimeLimit, ValidationScores, epoch_callbacks
from mtmoe.trainer.heads import calibrate
from mtmoe.trainer.model import build_model, compile_model
from mtmoe.trainer.module import best_epoch_callback, kept_epoch, set_thresholds

pytestmark = pytest.mark.slow

VOCABULARY = {"token_ids": 40, "char_ids": 20}
NAMES = {"intent": [f"i{i}" for i in range(5)], "slots": ["O", "B-a", "<unknown>"],
         "sentiment": ["s0", "s1"], "signals": ["g0", "g1"]}
SABOTAGED = 2


def _config(**training):
    config = load_config().with_overrides(learning_rate=0.02, **training)
    return dataclasses.replace(config, model=dataclasses.replace(
        config.model, trunk="dense", num_blocks=1, embedding_dim=16, ff_dim=16, num_heads=2,
        dropout=0.0))


def _data(config, size=64, signals=False):
    """Learnable from the words: the intent is the first word's id mod 5, a word's tag its parity
    (O or B-a). Sentiment is unlabelled; signals too, unless `signals`: then g0 when the second
    word's id is a multiple of 4, g1 of 5 (rare labels)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCABULARY["token_ids"], (size, 6)).astype("int32")
    inputs = {"token_ids": ids, "char_ids": np.ones((size, 6, config.text.max_chars), "int32")}
    labels = np.stack([ids[:, 1] % 4 == 0, ids[:, 1] % 5 == 0], axis=1).astype("float32")
    targets = {"intent": ids[:, 0] % 5, "slots": ids % 2, "sentiment": -np.ones(size, "int32"),
               "signals": labels if signals else -np.ones((size, 2), "float32")}
    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(16)


def _length_buckets(data):
    """Batches of 6, 5 and 4 tokens in turn, as the Trainer's length bucketing gives them."""
    def trim(index, batch):
        (inputs, targets), length = batch, 6 - tf.cast(index % 3, tf.int32)
        return ({name: value[:, :length] for name, value in inputs.items()},
                {**targets, "slots": targets["slots"][:, :length]})
    return data.enumerate().map(trim)


class _Sabotage(keras.callbacks.Callback):
    """Overwrites the weights with noise at the end of one epoch, before that epoch is scored."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == SABOTAGED:
            rng = np.random.default_rng(1)
            self.model.set_weights([rng.normal(0, 3, w.shape).astype(w.dtype)
                                    for w in self.model.get_weights()])


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def _fit(config, epochs, *more_callbacks):
    keras.utils.set_random_seed(1)
    model = compile_model(build_model(config, VOCABULARY, {k: len(v) for k, v in NAMES.items()}),
                          config)
    data = _data(config)
    snapshots, best = _Snapshots(), best_epoch_callback(config, epochs)
    history = model.fit(data.repeat(4), epochs=epochs, verbose=0, callbacks=[
        _Sabotage(), ValidationScores(data, config.tasks, NAMES), snapshots, best,
        *more_callbacks])
    return model, history, snapshots.weights, best


def test_the_best_epochs_weights_are_kept_when_a_later_epoch_is_worse():
    model, history, snapshots, best = _fit(_config(), epochs=5)
    objective = history.history["val_objective"]
    assert len(objective) == 5  # patience 0: every epoch runs
    assert objective[SABOTAGED] < max(objective)
    kept = int(np.argmax(objective))
    assert kept != SABOTAGED
    for actual, expected in zip(model.get_weights(), snapshots[kept]):
        np.testing.assert_array_equal(actual, expected)
    record = kept_epoch(best, history)
    assert (record["epoch"], record["epochs_run"]) == (kept + 1, 5)
    assert record["val_objective"] == pytest.approx(max(objective))


def test_training_stops_after_patience_epochs_without_a_better_one():
    model, history, snapshots, best = _fit(_config(patience=1), epochs=8)
    objective = history.history["val_objective"]
    first_without_gain = next(i for i in range(1, len(objective))
                              if objective[i] <= max(objective[:i]))
    assert len(objective) == first_without_gain + 1 <= SABOTAGED + 1
    assert "stopped after 1 without a better one" in kept_epoch(best, history)["reason"]


def test_max_minutes_stops_before_an_epoch_that_would_pass_it_and_keeps_the_best_so_far():
    ticks = iter(range(0, 1000, 10))  # a clock read once at the start and once per epoch: 10 s each
    limit = TimeLimit(35, tf.distribute.get_strategy(), clock=lambda: next(ticks))
    model, history, snapshots, best = _fit(_config(), 8, limit)
    objective = history.history["val_objective"]
    # After epoch 3 (30 s), another 10 s epoch would end past 35 s.
    assert len(objective) == limit.stopped_after == SABOTAGED + 1
    kept = int(np.argmax(objective))
    assert kept != SABOTAGED
    for actual, expected in zip(model.get_weights(), snapshots[kept]):
        np.testing.assert_array_equal(actual, expected)
    assert kept_epoch(best, history, limit)["reason"].endswith(
        "stopped at training.max_minutes (0.583333 min)")


def test_the_multilabel_threshold_chosen_on_eval_is_folded_into_the_kept_model():
    config = _config()
    keras.utils.set_random_seed(1)
    model = compile_model(build_model(config, VOCABULARY, {k: len(v) for k, v in NAMES.items()}),
                          config)
    data, best = _data(config, signals=True), best_epoch_callback(config, 3)
    history = model.fit(data.repeat(2), epochs=3, verbose=0, callbacks=[
        ValidationScores(data, config.tasks, NAMES), best])
    chosen = history.history["val_signals_threshold"][best.best_epoch]
    assert chosen != 0.5  # rare labels, a few epochs: their scores stay low
    gold = np.concatenate([targets["signals"].numpy() for _, targets in data])
    before = model.predict(data, verbose=0)["signals"]
    assert set_thresholds(model, config, history, best.best_epoch) == {"signals": chosen}
    counts = multilabel_counts(gold, model.predict(data, verbose=0)["signals"])  # at 0.5
    assert counts == multilabel_counts(gold, before, chosen) != multilabel_counts(gold, before)
    assert f1_from_counts(counts)["f1"] == pytest.approx(
        history.history["val_signals_micro_f1"][best.best_epoch], abs=1e-6)


def test_calibration_fits_a_temperature_per_probability_task_that_lowers_the_eval_nll():
    """An over-trained model (many epochs on 64 texts) is over-confident on held-out texts:
    temperature scaling on them raises its temperature and lowers their negative log-likelihood;
    the token-tagging task is not calibrated, the unlabelled sentiment has nothing to fit on."""
    config = _config()
    keras.utils.set_random_seed(1)
    model = compile_model(build_model(config, VOCABULARY, {k: len(v) for k, v in NAMES.items()}),
                          config)
    model.fit(_data(config, signals=True).repeat(8), epochs=3, verbose=0)
    held_out = _length_buckets(_data(config, size=256, signals=True).skip(4))  # texts 65-256
    outputs = eval_outputs(model, config.tasks, held_out)
    fitted = fit_temperatures(outputs, config.tasks)
    assert set(fitted) == {"intent", "signals"}
    for task, fit in fitted.items():
        assert fit["temperature"] != pytest.approx(1.0, abs=0.05), task
        assert fit["nll_after"] < fit["nll_before"], task
        probabilities = outputs[task][0]
        calibrated = calibrate(config.tasks, {task: tf.constant(probabilities)},
                               {task: fit["temperature"]})[task].numpy()
        if task == "intent":  # the arg-max stays; for one sigmoid per label, each 0.5 decision
            assert (calibrated.argmax(-1) == probabilities.argmax(-1)).all()
        else:
            assert ((calibrated >= 0.5) == (probabilities >= 0.5)).all()


def test_a_task_without_a_wrong_answer_on_eval_is_left_uncalibrated():
    """Every eval answer right: the likelihood would push every confidence to 1; left at T = 1."""
    config = _config()
    data = _data(config)
    perfect = lambda inputs, training: {  # noqa: E731  the intent answered right, surely
        "intent": tf.one_hot(inputs["token_ids"][:, 0] % 5, 5) * 0.9 + 0.02}
    intent = [t for t in config.tasks if t.name == "intent"]
    fitted = fit_temperatures(eval_outputs(perfect, intent, data), intent)
    assert fitted == {"intent": {"temperature": 1.0, "note": "no wrong answer on eval: not calibrated"}}


class _StepWeights(keras.callbacks.Callback):
    """The trainable weights after every training step, and at each epoch's end (as scored)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_ends = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.numpy() for w in self.model.trainable_weights])

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append([w.numpy() for w in self.model.trainable_weights])


def test_with_ema_momentum_the_moving_average_is_scored_and_kept():
    config = _config(ema_momentum=0.8)
    keras.utils.set_random_seed(1)
    model = compile_model(build_model(config, VOCABULARY, {k: len(v) for k, v in NAMES.items()}),
                          config)
    data, recorded, best = _data(config), _StepWeights(), best_epoch_callback(config, 2)
    model.fit(data, epochs=2, verbose=0,
              callbacks=epoch_callbacks(config, 2, data, NAMES) + [recorded, best])
    average, averages = None, []
    for weights in recorded.steps:  # Keras' first step starts the average at the weights
        average = weights if average is None else [0.8 * a + 0.2 * w
                                                   for a, w in zip(average, weights)]
        averages.append(average)
    steps_per_epoch = len(recorded.steps) // 2
    for epoch, scored in enumerate(recorded.epoch_ends):
        last_step = (epoch + 1) * steps_per_epoch - 1
        for actual, expected in zip(scored, averages[last_step]):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
        raw = recorded.steps[last_step]
        assert not all(np.allclose(actual, weights) for actual, weights in zip(scored, raw))
    for kept, scored in zip(model.trainable_weights, recorded.epoch_ends[best.best_epoch]):
        np.testing.assert_array_equal(kept.numpy(), scored)


def _scalars(folder) -> dict:
    """{tag: [value per step]} of the TensorBoard event files in `folder`."""
    found = {}
    for path in sorted(tf.io.gfile.glob(f"{folder}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return found


def test_tensorboard_gets_every_tasks_scores_the_learning_rate_and_each_routers_expert_load(tmp_path):
    from mtmoe.trainer.callbacks import cosine_decay
    from mtmoe.trainer.introspection import GateProbe
    from mtmoe.trainer.module import tensorboard_callbacks

    base = _config()
    config = dataclasses.replace(base, model=dataclasses.replace(
        base.model, trunk="deepseek_moe", routed_experts=4, top_k=2, expert_dim=8))
    keras.utils.set_random_seed(1)
    model = compile_model(build_model(config, VOCABULARY, {k: len(v) for k, v in NAMES.items()}),
                          config)
    data = _data(config)
    model.fit(data, validation_data=data, epochs=2, verbose=0, callbacks=[
        ValidationScores(data, config.tasks, NAMES), cosine_decay(2),
        *tensorboard_callbacks(str(tmp_path), GateProbe(model), data)])

    train, validation = _scalars(tmp_path / "train"), _scalars(tmp_path / "validation")
    for task in ("intent", "slots"):
        assert len(train[f"epoch_{task}_loss"]) == 2
    assert len(validation["epoch_intent_accuracy"]) == len(validation["epoch_slots_span_f1"]) == 2
    assert len(validation["epoch_objective"]) == 2
    assert train["epoch_learning_rate"][0] == pytest.approx(config.training.learning_rate)
    experts = _scalars(tmp_path / "experts")
    routers = {tag.rsplit("/", 1)[0] for tag in experts}
    # one shared router in the first block, one per task in the last (num_blocks 1: the last)
    assert routers == {f"expert_load/ffn_0/{task.name}" for task in config.tasks}
    for router in routers:
        loads = np.array([experts[f"{router}/expert_{i}"] for i in range(4)])  # [expert, epoch]
        np.testing.assert_allclose(loads.sum(axis=0), 1.0, atol=1e-5)
