"""The trunk's layers: routing, the balance loss, capacity dispatch against dense dispatch."""
import math

import keras
import numpy as np
import pytest
from keras import ops

from mtmoe.trainer.layers import CharacterEncoder, DeepSeekMoE, MultiGateExperts, RecurrentEncoder

DIM, EXPERTS, TOP_K = 8, 4, 2


def _moe(**kwargs):
    settings = dict(dim=DIM, expert_dim=6, num_shared=1, num_routed=EXPERTS, top_k=TOP_K,
                    router_names=["shared"], capacity_factor=1.25, balance_alpha=0.5)
    settings.update(kwargs)
    layer = DeepSeekMoE(**settings)
    layer.build((None, None, DIM))
    return layer


def _inputs(batch=3, length=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, DIM)).astype("float32")
    mask = np.ones((batch, length), bool)
    mask[0, 3:] = False
    return x, mask


def _copy_weights(source, target, x, mask):
    source(x, mask)
    target(x, mask)  # builds every sublayer, so that both hold the same weight list
    target.set_weights(source.get_weights())


def test_each_token_gets_exactly_top_k_distinct_experts():
    layer = _moe()
    x, _ = _inputs()
    scores, gates, experts = layer.route(layer.norm(ops.reshape(x, (-1, DIM))), "shared")
    experts = ops.convert_to_numpy(experts)
    assert experts.shape == (15, TOP_K)
    assert all(len(set(row)) == TOP_K for row in experts)
    scores, gates = ops.convert_to_numpy(scores), ops.convert_to_numpy(gates)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(gates, np.take_along_axis(scores, experts, axis=1), rtol=1e-6)
    assert np.all(gates >= np.sort(scores, axis=1)[:, -TOP_K][:, None] - 1e-7)


def test_balance_loss_matches_hand_computation():
    layer = _moe()
    scores = np.array([[0.6, 0.3, 0.05, 0.05],
                       [0.1, 0.5, 0.3, 0.1],
                       [0.25, 0.25, 0.4, 0.1]], dtype="float32")
    experts = np.array([[0, 1], [1, 2], [2, 0]])
    valid = np.array([1, 1, 0], dtype="float32")  # the third token is padding
    # f_i = N_r / (K T) * tokens choosing i over T=2 tokens: expert 0 once, 1 twice, 2 once, 3 never.
    f = np.array([1, 2, 1, 0]) * EXPERTS / (TOP_K * 2)
    p = (scores[0] + scores[1]) / 2
    expected = 0.5 * np.sum(f * p)
    assert float(layer.balance_loss(scores, experts, valid)) == pytest.approx(expected, rel=1e-6)


def test_capacity_dispatch_equals_dense_dispatch_when_no_token_overflows():
    x, mask = _inputs()
    # capacity = ceil(T * k / N_r * f) = T when f = N_r / k: room for every token in every expert.
    capacity = _moe(capacity_factor=EXPERTS / TOP_K)
    dense = _moe(dense_dispatch=True)
    _copy_weights(capacity, dense, x, mask)
    assert capacity.capacity(15) == 15
    np.testing.assert_allclose(ops.convert_to_numpy(capacity(x, mask, training=True)[0]),
                               ops.convert_to_numpy(dense(x, mask, training=True)[0]),
                               rtol=1e-5, atol=1e-5)


def test_overflow_tokens_keep_the_residual_and_shared_path():
    x, mask = _inputs()
    tight = _moe(capacity_factor=0.1)  # capacity ceil(15 * 2 / 4 * 0.1) = 1 slot per expert
    assert tight.capacity(15) == 1
    out = ops.convert_to_numpy(tight(x, mask, training=True)[0]).reshape(-1, DIM)
    h = tight.norm(ops.reshape(x, (-1, DIM)))
    shared = ops.convert_to_numpy(tight.shared_out(tight.shared_in(h)))
    without_routed = x.reshape(-1, DIM) + shared
    differs = ~np.all(np.isclose(out, without_routed, atol=1e-6), axis=-1)
    # At most one token per expert got routed help: at most N_r tokens differ from x + shared(x).
    assert 1 <= differs.sum() <= EXPERTS
    assert not differs.reshape(3, 5)[0, 3:].any()  # padding never takes a slot


def test_at_inference_no_token_loses_an_expert_to_a_full_buffer():
    """Buffers apply in training only: at inference the tight layer equals dense dispatch, and a
    text's output is the same alone and behind texts that crowd its experts."""
    x, mask = _inputs()
    tight, dense = _moe(capacity_factor=0.1), _moe(dense_dispatch=True)
    _copy_weights(tight, dense, x, mask)
    np.testing.assert_allclose(ops.convert_to_numpy(tight(x, mask)[0]),
                               ops.convert_to_numpy(dense(x, mask)[0]), rtol=1e-5, atol=1e-5)
    crowd = np.concatenate([np.repeat(x[1:2], 8, axis=0), x[:1]])
    crowded = ops.convert_to_numpy(tight(crowd, np.ones(crowd.shape[:2], bool))[0])
    alone = ops.convert_to_numpy(tight(x[:1], np.ones((1, 5), bool))[0])
    np.testing.assert_allclose(crowded[-1], alone[0], rtol=1e-5, atol=1e-5)


def test_at_inference_every_expert_runs_once_and_each_router_weighs_its_top_k():
    layer = _moe(router_names=["a", "b", "c"])
    x, mask = _inputs()
    layer(x, mask)
    every_expert, calls = layer.routed.all_experts, []
    layer.routed.all_experts = lambda h: calls.append(h) or every_expert(h)
    outputs = [ops.convert_to_numpy(out).reshape(-1, DIM) for out in layer(x, mask)]
    assert len(calls) == 1  # not once per router
    h = layer.norm(ops.reshape(x, (-1, DIM)))
    experts_out = ops.convert_to_numpy(every_expert(h))  # [N, N_r, d]
    common = ops.convert_to_numpy(layer.shared_out(layer.shared_in(h)))
    valid = mask.reshape(-1)
    for name, out in zip(["a", "b", "c"], outputs):
        _, gates, chosen = (ops.convert_to_numpy(v) for v in layer.route(h, name))
        weights = np.zeros((len(valid), EXPERTS), "float32")
        np.put_along_axis(weights, chosen, gates, axis=1)
        routed = np.einsum("ne,ned->nd", weights * valid[:, None], experts_out)
        np.testing.assert_allclose(out, x.reshape(-1, DIM) + common + routed, rtol=1e-5, atol=1e-5)
    assert not np.allclose(outputs[0], outputs[1])


def test_all_experts_gives_each_expert_on_each_input():
    layer = _moe()
    experts, rng = layer.routed, np.random.default_rng(1)
    for weight in experts.weights:  # non-zero biases, so that a swapped bias shows
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    h = _inputs()[0].reshape(-1, DIM)
    w1, b1, w2, b2 = (ops.convert_to_numpy(w) for w in (experts.w1, experts.b1, experts.w2,
                                                           experts.b2))
    out = ops.convert_to_numpy(experts.all_experts(h))
    assert out.shape == (len(h), EXPERTS, DIM)
    for e in range(EXPERTS):
        hidden = ops.convert_to_numpy(keras.activations.gelu(h @ w1[e] + b1[e]))
        np.testing.assert_allclose(out[:, e], hidden @ w2[e] + b2[e], rtol=1e-5, atol=1e-5)


def test_routed_compute_follows_top_k_not_the_number_of_experts():
    few, many = _moe(num_routed=4), _moe(num_routed=32)
    tokens = 1024
    slots = [layer.num_routed * layer.capacity(tokens) for layer in (few, many)]
    assert slots[0] == pytest.approx(slots[1], rel=0.05)  # ~ tokens * top_k * capacity_factor
    assert slots[0] == pytest.approx(tokens * TOP_K * 1.25, rel=0.05)


def test_per_task_routers_share_experts_and_give_one_output_each():
    layer = _moe(router_names=["intent", "slots"])
    x, mask = _inputs()
    outputs = layer(x, mask)
    assert len(outputs) == 2 and all(o.shape == (3, 5, DIM) for o in outputs)
    assert len(layer.losses) == 2  # one balance loss per router
    assert not np.allclose(ops.convert_to_numpy(outputs[0]), ops.convert_to_numpy(outputs[1]))
    gates = layer.gate_probabilities(x)
    assert set(gates) == {"intent", "slots"}


def test_mmoe_gates_are_softmax_per_task():
    layer = MultiGateExperts(DIM, 6, 3, ["a", "b", "c"])
    x, mask = _inputs()
    outputs = layer(x, mask)
    assert len(outputs) == 3
    for probs in layer.gate_probabilities(x).values():
        np.testing.assert_allclose(ops.convert_to_numpy(probs).sum(-1), 1.0, rtol=1e-5)


def test_character_encoder_gives_a_word_the_same_vector_whatever_pads_it():
    """A word padded to 4 or 7 characters encodes as the word alone, with no padding at all: the
    padding character's embedding never reaches the filters at the word's end."""
    layer = CharacterEncoder(10, 4, 6)
    alone = ops.convert_to_numpy(layer(np.array([[[1, 2, 5]]])))
    for width in (4, 7):
        padded = np.zeros((1, 2, width), "int32")
        padded[0, 0, :3] = [1, 2, 5]
        padded[0, 1, :1] = [3]
        out = ops.convert_to_numpy(layer(padded))
        assert out.shape == (1, 2, 6)
        np.testing.assert_allclose(out[0, 0], alone[0, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", [
    _moe(router_names=["a", "b"], dense_dispatch=True),
    MultiGateExperts(DIM, 6, 3, ["a", "b"], dropout=0.1),
    CharacterEncoder(10, 4, 6, kernel_size=2),
    RecurrentEncoder(DIM, dropout=0.1),
    RecurrentEncoder(DIM, units=DIM),
])
def test_get_config_round_trips(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_capacity_formula():
    assert _moe().capacity(100) == math.ceil(100 * TOP_K / EXPERTS * 1.25)
    assert keras.__version__.startswith("3.")


@pytest.mark.parametrize("units", [None, DIM])
def test_recurrent_encoder_ignores_padding_and_keeps_it_residual_only(units):
    layer = RecurrentEncoder(DIM, units=units)
    x, mask = _inputs()
    out = ops.convert_to_numpy(layer(x, mask))
    np.testing.assert_allclose(out[0, 3:], x[0, 3:])  # padding: the residual alone
    changed = x.copy()
    changed[0, 3:] += 5.0  # padding inputs must not reach real tokens, in either direction
    np.testing.assert_allclose(ops.convert_to_numpy(layer(changed, mask))[0, :3], out[0, :3], atol=1e-5)
    assert not np.allclose(out[0, :3], x[0, :3])
    # Two LSTMs of `units` (default: half the width), projected back to the width when wider.
    assert layer.rnn.forward_layer.units == (units or DIM // 2)
    assert (layer.projection is not None) == (units is not None)


def test_the_layers_docstring_examples_run_and_print_what_they_say():
    import doctest

    import mtmoe.trainer.layers

    result = doctest.testmod(mtmoe.trainer.layers, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


def test_every_public_layer_is_registered_and_rebuilds_from_its_config():
    import keras

    import mtmoe.trainer.layers as layers

    layer = layers.DeepSeekMoE(16, 8, 1, 8, 2, ["a", "b"], name="moe")
    assert keras.saving.get_registered_object("mtmoe>DeepSeekMoE") is layers.DeepSeekMoE
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(rebuilt) is layers.DeepSeekMoE and rebuilt.get_config() == layer.get_config()
    for name in ("TokenAndPositionEmbedding", "RecurrentEncoder", "CharacterEncoder", "SelfAttention",
                 "FeedForward", "MultiGateExperts", "MaskedMeanPooling"):
        assert keras.saving.get_registered_object(f"mtmoe>{name}") is getattr(layers, name), name


def _every_layer():
    """(layer, call arguments) for each public layer, as their docstring examples build them."""
    from mtmoe.trainer import layers

    x, mask = ops.zeros((2, 5, 16)), ops.ones((2, 5), dtype="bool")
    return [(layers.TokenAndPositionEmbedding(100, 16, 8), (ops.ones((2, 5), dtype="int32"),)),
            (layers.RecurrentEncoder(16), (x, mask)),
            (layers.CharacterEncoder(50, 8, 16), (ops.ones((2, 5, 12), dtype="int32"),)),
            (layers.SelfAttention(16, 2), (x, mask)),
            (layers.FeedForward(16, 32), (x, mask)),
            (layers.MultiGateExperts(16, 32, 4, ["a", "b"]), (x, mask)),
            (layers.DeepSeekMoE(16, 8, 1, 8, 2, ["a", "b"]), (x, mask)),
            (layers.MaskedMeanPooling(), (x, mask))]


def test_every_layer_computes_its_output_shape_without_running():
    for layer, args in _every_layer():
        outputs = layer(*args)
        shapes = layer.compute_output_shape(*[tuple(a.shape) for a in args])
        actual = [tuple(o.shape) for o in outputs] if isinstance(outputs, list) else tuple(outputs.shape)
        assert (list(map(tuple, shapes)) if isinstance(shapes, list) else tuple(shapes)) == actual, layer


def test_a_layers_dtype_policy_reaches_its_sublayers():
    """A layer built under mixed precision computes in float16 all through, its weights float32,
    whatever the global policy says."""
    import keras

    for layer, args in _every_layer():
        config = layer.get_config()
        config["dtype"] = "mixed_float16"
        mixed = type(layer).from_config(config)
        mixed(*args)
        for sublayer in mixed._flatten_layers(include_self=False):
            assert sublayer.dtype_policy.name == "mixed_float16", (type(layer).__name__, sublayer.name)
        assert {w.dtype for w in mixed.weights} <= {"float32"}
    assert keras.config.dtype_policy().name == "float32"


def test_a_functional_model_builds_every_weight_before_its_first_call():
    """Warm start loads weights into a model that has not run yet: a symbolic call must create
    every weight (with compute_output_shape defined, Keras does not trace `call` to find them)."""
    import keras

    for layer, args in _every_layer():
        symbolic = [keras.Input(tuple(a.shape)[1:], dtype=a.dtype) for a in args]
        layer(*symbolic)
        created = len(layer.weights)
        layer(*args)
        assert len(layer.weights) == created, type(layer).__name__
