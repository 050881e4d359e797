"""MoE scaling: training step time, inference latency and parameters as routed experts grow, for
capacity dispatch (the default) and dense dispatch (every expert on every token), at fixed top_k.

    python bench/moe_scaling.py [--experts 4 8 16 32 64] [--steps 20] [--calls 100]

The whole multi-task model of the default config (deepseek_moe trunk, 2 blocks), on random token ids
of full length (32 tokens, so no padding shortens the work), batch 32 for training and batch 1 for
inference; medians after warm-up. Active parameters: every weight but the routed experts that a
token does not use (N_r - top_k per MoE layer). Writes bench/results/moe_scaling.json.
"""
import argparse
import dataclasses
import statistics
import time

import numpy as np

import mtmoe  # noqa: F401  sets the Keras environment before TensorFlow loads
from machine import write_result

VOCABULARY = {"token_ids": 2000, "char_ids": 60}


def _median_seconds(function, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _batch(config, classes, size, rng):
    length, chars = config.text.max_tokens, config.text.max_chars
    inputs = {"token_ids": rng.integers(1, VOCABULARY["token_ids"], (size, length)),
              "char_ids": rng.integers(1, VOCABULARY["char_ids"], (size, length, chars))}
    targets = {}
    for task in config.tasks:
        if task.type == "classification":
            targets[task.name] = rng.integers(0, classes[task.name], size)
        elif task.type == "token_tagging":
            targets[task.name] = rng.integers(0, classes[task.name], (size, length))
        else:
            targets[task.name] = rng.integers(0, 2, (size, classes[task.name])).astype("float32")
    return inputs, targets


def measure(config, experts: int, dense: bool, steps: int, calls: int) -> dict:
    import keras
    import tensorflow as tf

    from mtmoe.trainer.model import build_model, compile_model, moe_layers

    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, routed_experts=experts, dense_dispatch=dense))
    classes = {task.name: 8 for task in config.tasks}
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(config, VOCABULARY, classes), config)
    rng = np.random.default_rng(0)
    inputs, targets = _batch(config, classes, config.training.batch_size, rng)
    one, _ = _batch(config, classes, 1, rng)
    predict = tf.function(lambda x: model(x, training=False))
    # One fit over `steps` copies of the batch per timing (train_on_batch retraces every call).
    batches = tf.data.Dataset.from_tensors((inputs, targets)).repeat(steps)
    train_s = _median_seconds(lambda: model.fit(batches, verbose=0), 3, warmup=1) / steps
    infer_s = _median_seconds(lambda: predict(one), calls)
    m = config.model
    per_expert = 2 * m.embedding_dim * m.expert_dim + m.expert_dim + m.embedding_dim
    total = model.count_params()
    unused = len(moe_layers(model)) * (experts - m.top_k) * per_expert
    return {"routed_experts": experts, "dispatch": "dense" if dense else "capacity",
            "train_step_ms": round(train_s * 1000, 2), "inference_ms": round(infer_s * 1000, 2),
            "total_params": total, "active_params": total - unused}


def main():
    from mtmoe.core.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per row")
    parser.add_argument("--calls", type=int, default=100, help="inference calls timed per row")
    args = parser.parse_args()
    config = load_config()
    rows = [measure(config, experts, dense, args.steps, args.calls)
            for dense in (False, True) for experts in args.experts]
    print(f"top_k {config.model.top_k}, batch {config.training.batch_size} x "
          f"{config.text.max_tokens} tokens for training, 1 text for inference\n")
    print("| dispatch | routed experts | train step ms | inference ms | active params | total params |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dispatch']} | {row['routed_experts']} | {row['train_step_ms']} | "
              f"{row['inference_ms']} | {row['active_params']} | {row['total_params']} |")
    write_result("moe_scaling", top_k=config.model.top_k, batch_size=config.training.batch_size,
                 max_tokens=config.text.max_tokens, rows=rows)


if __name__ == "__main__":
    main()
