"""The whole model for each trunk: named float32 outputs, mixed precision, balance losses, gates."""
import dataclasses

import keras
import numpy as np
import pytest

from mtmoe.core.config import TRUNKS, load_config
from mtmoe.trainer.callbacks import cosine_decay
from mtmoe.trainer.introspection import gate_statistics
from mtmoe.trainer.layers import RecurrentEncoder
from mtmoe.trainer.model import build_model, compile_model

VOCABULARY = {"token_ids": 40, "char_ids": 20}
CLASSES = {"intent": 5, "slots": 7, "sentiment": 4, "signals": 3}


def _config(trunk="deepseek_moe", blocks=2, **training):
    config = load_config()
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, trunk=trunk, embedding_dim=16, ff_dim=16, expert_dim=8, num_heads=2,
        num_blocks=blocks))
    return config.with_overrides(**training) if training else config


def _batch(config, size=6, seed=0):
    rng = np.random.default_rng(seed)
    length, chars = config.text.max_tokens, config.text.max_chars
    ids = rng.integers(1, VOCABULARY["token_ids"], (size, length))
    ids[:, 7:] = 0
    inputs = {"token_ids": ids, "char_ids": rng.integers(0, VOCABULARY["char_ids"], (size, length, chars))}
    slots = rng.integers(0, CLASSES["slots"], (size, length))
    slots[:, 7:] = -1
    targets = {"intent": rng.integers(-1, CLASSES["intent"], size), "slots": slots,
               "sentiment": rng.integers(-1, CLASSES["sentiment"], size),
               "signals": rng.integers(0, 2, (size, CLASSES["signals"])).astype("float32")}
    return inputs, targets


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("trunk", TRUNKS)
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_outputs_are_named_shaped_and_float32(trunk, policy):
    keras.mixed_precision.set_global_policy(policy)
    config = _config(trunk)
    model = build_model(config, VOCABULARY, CLASSES)
    inputs, _ = _batch(config)
    outputs = model(inputs)
    length = config.text.max_tokens
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "intent": (6, 5), "slots": (6, length, 7), "sentiment": (6, 4), "signals": (6, 3)}
    assert all(v.dtype == "float32" for v in outputs.values())
    np.testing.assert_allclose(np.sum(outputs["intent"], -1), 1.0, rtol=1e-3)


def test_moe_trunk_adds_one_balance_loss_per_router():
    config = _config("deepseek_moe")
    model = build_model(config, VOCABULARY, CLASSES)
    model(_batch(config)[0])
    # Block 0 has the shared router, the last block one router per task.
    assert len(model.losses) == 1 + len(CLASSES)
    assert all(float(loss) > 0 for loss in model.losses)


@pytest.mark.parametrize("trunk", ["mmoe", "deepseek_moe"])
def test_gate_statistics_per_task_sum_to_one(trunk):
    config = _config(trunk)
    model = build_model(config, VOCABULARY, CLASSES)
    stats = gate_statistics(model, [_batch(config, seed=s)[0] for s in range(2)])
    last = stats[f"ffn_{config.model.num_blocks - 1}"]
    assert set(last) == set(CLASSES)
    for router in last.values():
        assert sum(router["mean_gate"]) == pytest.approx(1.0, abs=1e-4)
        assert sum(router["load"]) == pytest.approx(1.0, abs=1e-4)
    if trunk == "deepseek_moe":
        assert len(last["intent"]["load"]) == config.model.routed_experts


def test_dense_trunk_has_no_gates():
    config = _config("dense")
    assert gate_statistics(build_model(config, VOCABULARY, CLASSES), [_batch(config)[0]]) == {}


@pytest.mark.slow
def test_fgm_step_trains_and_puts_the_embeddings_back():
    config = _config("dense", blocks=1, fgm_epsilon=1.0, learning_rate=0.0, weight_decay=0.0)
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    inputs, targets = _batch(config)
    table = model.get_layer("embedding").tokens.embeddings
    before = np.array(table.numpy())
    history = model.fit(inputs, targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    np.testing.assert_allclose(table.numpy(), before, atol=1e-6)


@pytest.mark.slow
def test_fgm_every_k_perturbs_only_every_kth_step():
    """Two steps with fgm_every=2 land where an FGM step then a plain step land, not where two
    FGM steps do."""
    config = _config("dense", blocks=1, fgm_epsilon=1.0, fgm_every=2, learning_rate=0.01)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dropout=0.0))
    first, second = _batch(config, seed=1), _batch(config, seed=2)
    start = build_model(config, VOCABULARY, CLASSES).get_weights()

    def trained(fgm_every, plain_second_step=False):
        model = build_model(config.with_overrides(fgm_every=fgm_every), VOCABULARY, CLASSES)
        model.set_weights(start)
        model = compile_model(model, config.with_overrides(fgm_every=fgm_every))
        if not plain_second_step:
            both = [{key: np.concatenate([a[key], b[key]]) for key in a}
                    for a, b in zip(first, second)]
            model.fit(*both, batch_size=6, shuffle=False, epochs=1, verbose=0)
        else:
            model.fit(*first, batch_size=6, epochs=1, verbose=0)
            model.fgm_epsilon, model.train_function = 0.0, None
            model.fit(*second, batch_size=6, epochs=1, verbose=0)
        return np.concatenate([w.ravel() for w in model.get_weights()])

    every_other = trained(fgm_every=2)
    # Adam's normalised step magnifies float-order noise on near-zero gradients (up to ~1e-4).
    to_fgm_then_plain = np.abs(every_other - trained(fgm_every=1, plain_second_step=True)).max()
    to_fgm_twice = np.abs(every_other - trained(fgm_every=1)).max()
    assert to_fgm_then_plain < 0.01 * to_fgm_twice


def test_training_options_reach_the_optimizer_and_losses():
    config = _config("dense", gradient_accumulation_steps=4, label_smoothing=0.1)
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    assert model.optimizer.gradient_accumulation_steps == 4
    assert model.optimizer.weight_decay == config.training.weight_decay
    assert model.loss["intent"].label_smoothing == 0.1


@pytest.mark.slow
def test_recurrent_option_adds_one_bilstm_and_keeps_the_outputs():
    config = _config("deepseek_moe", blocks=1)
    assert "recurrent" not in {layer.name for layer in build_model(config, VOCABULARY, CLASSES).layers}
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, recurrent=True))
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    assert "recurrent" in {layer.name for layer in model.layers}
    inputs, targets = _batch(config)
    history = model.fit(inputs, targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    outputs = model(inputs)
    assert outputs["slots"].shape == (6, config.text.max_tokens, CLASSES["slots"])
    assert outputs["intent"].shape == (6, CLASSES["intent"])


def test_recurrent_layers_stack_bilstms_each_on_the_outputs():
    config = _config("dense", blocks=1)
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, recurrent=True, recurrent_layers=2, dropout=0.0))
    model = build_model(config, VOCABULARY, CLASSES)
    assert [layer.name for layer in model.layers if isinstance(layer, RecurrentEncoder)] == [
        "recurrent", "recurrent_2"]
    inputs, _ = _batch(config)
    before = model(inputs)["slots"].numpy()
    second = model.get_layer("recurrent_2")
    second.set_weights([w + 0.1 for w in second.get_weights()])
    assert not np.allclose(model(inputs)["slots"].numpy(), before, atol=1e-4)


@pytest.mark.slow
def test_cosine_decay_lowers_the_starting_learning_rate_each_epoch():
    config = _config("dense", blocks=1, learning_rate=0.01)
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    inputs, targets = _batch(config)
    history = model.fit(inputs, targets, epochs=4, verbose=0, callbacks=[cosine_decay(4)])
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.01, 0.00853553, 0.005, 0.00146447], rtol=1e-5)
    model.optimizer.learning_rate = 0.1  # as a tuning trial's model is compiled with its own rate
    history = model.fit(inputs, targets, epochs=2, verbose=0, callbacks=[cosine_decay(2)])
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05], rtol=1e-5)


@pytest.mark.parametrize("trunk", TRUNKS)
def test_a_texts_predictions_do_not_depend_on_padding_or_on_the_other_texts(trunk):
    """Trained batches are cut to their longest text: a text's outputs must be the same alone (cut
    to its own length), among short texts, and among long ones padded to max_tokens, whose tokens
    also crowd the same experts (no capacity drop at inference)."""
    config = dataclasses.replace(_config(trunk), model=dataclasses.replace(
        _config(trunk).model, recurrent=True, dropout=0.0))
    model = build_model(config, VOCABULARY, CLASSES)
    rng = np.random.default_rng(3)
    length, chars = config.text.max_tokens, config.text.max_chars

    def texts(lengths):
        ids = np.zeros((len(lengths), length), "int32")
        char_ids = np.zeros((len(lengths), length, chars), "int32")
        for row, n in enumerate(lengths):
            ids[row, :n] = rng.integers(1, VOCABULARY["token_ids"], n)
            char_ids[row, :n, :3] = rng.integers(1, VOCABULARY["char_ids"], (n, 3))
        return {"token_ids": ids, "char_ids": char_ids}

    text = texts([4])
    alone = model({k: v[:, :4] for k, v in text.items()}, training=False)
    short = texts([2, 3, 1])
    long = texts([length] * 5)
    long["token_ids"][:] = long["token_ids"][:1]  # the same words everywhere: the same experts
    for others, cut in ((short, 4), (long, length)):
        batch = {k: np.concatenate([others[k], text[k]])[:, :cut] for k in text}
        together = model(batch, training=False)
        for task in config.tasks:
            got, expected = np.asarray(together[task.name][-1]), np.asarray(alone[task.name][0])
            if task.type == "token_tagging":
                got = got[:4]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=task.name)


def test_tagging_heads_can_read_the_predicted_classes_and_configs_without_classes_still_build():
    config = _config("dense")
    seeing = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   tags_see_classes=True))
    plain, reading = (build_model(c, VOCABULARY, CLASSES) for c in (config, seeing))
    # The slots tower reads the intent's and the sentiment's probabilities at every token.
    width = {m: m.get_layer("slots_tower").kernel.shape[0] for m in (plain, reading)}
    assert width[reading] == width[plain] + CLASSES["intent"] + CLASSES["sentiment"]
    inputs, _ = _batch(seeing)
    assert reading(inputs)["slots"].shape == (6, seeing.text.max_tokens, CLASSES["slots"])
    tags_only = dataclasses.replace(seeing, tasks=tuple(t for t in seeing.tasks
                                                        if t.type == "token_tagging"))
    model = build_model(tags_only, VOCABULARY, {"slots": CLASSES["slots"]})
    assert list(model(inputs)) == ["slots"]


def test_a_crf_model_trains_its_tag_transitions_with_the_sequence_likelihood():
    from mtmoe.trainer.heads import CRFLoss, crf_scores

    config = _config("dense", blocks=1, learning_rate=0.05)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, crf=True))
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    scores = crf_scores(model, config.tasks)
    assert list(scores) == ["slots"]  # the token-tagging task only
    assert isinstance(model.loss["slots"], CRFLoss)
    inputs, targets = _batch(config)
    before = [np.array(v) for v in scores["slots"]]
    assert not any(b.any() for b in before)  # both start at 0
    first = model.train_on_batch(inputs, targets, return_dict=True)["slots_loss"]
    for _ in range(5):
        last = model.train_on_batch(inputs, targets, return_dict=True)["slots_loss"]
    assert all(np.abs(np.array(v)).max() > 1e-3 for v in scores["slots"])
    assert last < first


def _token_level(config):
    return dataclasses.replace(config, model=dataclasses.replace(
        config.model, tags_see_classes=True, token_level_classes=True))


def test_token_level_classes_feed_each_token_its_own_prediction():
    config = _token_level(_config("dense", blocks=1))
    model = build_model(config, VOCABULARY, CLASSES)
    inputs, _ = _batch(config)
    outputs = model(inputs)
    length = config.text.max_tokens
    assert outputs["intent_per_token"].shape == (6, length, CLASSES["intent"])
    assert outputs["sentiment_per_token"].shape == (6, length, CLASSES["sentiment"])
    assert "signals_per_token" not in outputs and "slots_per_token" not in outputs
    # The slots read the per-token predictions; the text's intent does not depend on them.
    layer = model.get_layer("intent_per_token")
    layer.kernel.assign(np.random.default_rng(0).normal(0, 1, layer.kernel.shape))
    moved = model(inputs)
    np.testing.assert_allclose(moved["intent"], outputs["intent"])
    assert np.abs(np.array(moved["slots"]) - np.array(outputs["slots"])).max() > 1e-4


def test_the_token_level_loss_is_each_texts_mean_over_its_tokens_then_over_labelled_texts():
    from mtmoe.trainer.heads import token_level_loss

    rng = np.random.default_rng(0)
    ids = np.array([[3, 4, 0, 0], [5, 6, 7, 0], [8, 0, 0, 0]], "int32")
    labels = np.array([1, -1, 2])
    probs = rng.dirichlet(np.ones(3), (3, 4)).astype("float32")
    expected = np.mean([-np.log(probs[0, :2, 1]).mean(), -np.log(probs[2, :1, 2]).mean()])
    np.testing.assert_allclose(float(token_level_loss(ids, labels, probs)), expected, rtol=1e-5)


def test_token_level_classes_add_their_loss_and_stay_out_of_the_served_outputs():
    from mtmoe.trainer.heads import decode_outputs, token_level_loss

    config = _token_level(_config("dense", blocks=1))
    model = compile_model(build_model(config, VOCABULARY, CLASSES), config)
    inputs, targets = _batch(config)
    y_pred = model(inputs)
    with_tokens = float(model.compute_loss(inputs, targets, y_pred))
    served = {t.name: y_pred[t.name] for t in config.tasks}
    without = float(keras.Model.compute_loss(model, inputs, targets, served))  # the compiled losses
    compiled = sum(t.loss_weight * float(model.loss[t.name](targets[t.name], served[t.name]))
                   for t in config.tasks)
    np.testing.assert_allclose(without, compiled, rtol=1e-5)  # each task's loss on its own output
    weights = model.token_level_tasks
    assert set(weights) == {"intent", "sentiment"}
    added = sum(w * float(token_level_loss(inputs["token_ids"], targets[name],
                                           y_pred[f"{name}_per_token"]))
                for name, w in weights.items())
    assert added > 0
    np.testing.assert_allclose(with_tokens - without, added, rtol=1e-4)
    history = model.fit(inputs, targets, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not any(name.endswith("per_token") for name in history.history)
    names = {t.name: [f"c{i}" for i in range(CLASSES[t.name])] for t in config.tasks}
    decoded = decode_outputs(config.tasks, model(inputs), names, inputs["token_ids"] != 0)
    assert not any(name.endswith("per_token") for name in decoded)
    assert "intent_label" in decoded and "slots_tags" in decoded
