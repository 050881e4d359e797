"""What the gates of a trained MoE model do: per router, the mean gate weight and the load per expert."""
from typing import Dict

import keras
import numpy as np
from keras import ops

from trainer.layers import DeepSeekMoE
from trainer.model import moe_layers


def gate_statistics(model: keras.Model, batches) -> Dict[str, Dict[str, Dict[str, list]]]:
    """{layer: {router: {"mean_gate": [E], "load": [E]}}} over the non-padding tokens of `batches`.

    `batches` (model inputs) is read once per gated layer, so it must be re-iterable (a list or a
    tf.data.Dataset, not a generator).

    `mean_gate` is the mean softmax weight per expert (sums to 1). `load` is the share of routed
    token slots each expert receives: of the top-k choices for DeepSeekMoE, the gate weights
    themselves for MMoE, where every expert sees every token (sums to 1 either way).
    """
    stats = {}
    for layer in moe_layers(model):
        x_tensor, mask_tensor = layer.input[:2]
        probe = keras.Model(model.inputs, [x_tensor, mask_tensor])
        sums: Dict[str, Dict[str, np.ndarray]] = {}
        for inputs in batches:
            x, mask = probe(inputs, training=False)
            valid = ops.convert_to_numpy(mask).reshape(-1).astype(bool)
            for router, probs in layer.gate_probabilities(x).items():
                probs = ops.convert_to_numpy(probs).reshape(-1, probs.shape[-1])[valid]
                if isinstance(layer, DeepSeekMoE):
                    top = np.argsort(-probs, axis=-1)[:, :layer.top_k]
                    load = np.bincount(top.reshape(-1), minlength=probs.shape[-1])
                else:
                    load = probs.sum(axis=0)
                entry = sums.setdefault(router, {"gate": 0.0, "load": 0.0})
                entry["gate"] = entry["gate"] + probs.sum(axis=0)
                entry["load"] = entry["load"] + load
        stats[layer.name] = {
            router: {"mean_gate": (s["gate"] / np.sum(s["gate"])).round(6).tolist(),
                     "load": (s["load"] / np.sum(s["load"])).round(6).tolist()}
            for router, s in sums.items()}
    return stats
