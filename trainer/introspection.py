"""What the gates of a trained MoE model do: per router, the mean gate weight and the load per expert."""
from typing import Dict

import keras
import numpy as np
from keras import ops

from mtmoe.trainer.layers import DeepSeekMoE
from mtmoe.trainer.model import moe_layers


class GateProbe:
    """Every gated layer's router probabilities and token mask for a batch, in one graph: built
    once per model (ExpertLoad measures after every epoch; an eager probe per layer costs about a
    second each time)."""

    def __init__(self, model: keras.Model):
        import tensorflow as tf

        self.layers = moe_layers(model)
        if not self.layers:  # a dense trunk: no gates
            return
        probe = keras.Model(model.inputs, [tensor for layer in self.layers
                                           for tensor in layer.input[:2]])

        def gates(inputs):
            values = probe(inputs, training=False)
            return [(layer.gate_probabilities(values[2 * i]), values[2 * i + 1])
                    for i, layer in enumerate(self.layers)]

        self._gates = tf.function(gates, reduce_retracing=True, autograph=False)

    def __call__(self, batches) -> Dict[str, Dict[str, Dict[str, list]]]:
        """{layer: {router: {"mean_gate": [E], "load": [E]}}} over the non-padding tokens of
        `batches` (model inputs, read once).

        `mean_gate` is the mean softmax weight per expert (sums to 1). `load` is the share of
        routed token slots each expert receives: of the top-k choices for DeepSeekMoE, the gate
        weights themselves for MMoE, where every expert sees every token (sums to 1 either way).
        """
        if not self.layers:
            return {}
        sums: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {layer.name: {} for layer in self.layers}
        for inputs in batches:
            for layer, (routers, mask) in zip(self.layers, self._gates(inputs)):
                valid = ops.convert_to_numpy(mask).reshape(-1).astype(bool)
                for router, probs in routers.items():
                    probs = ops.convert_to_numpy(probs).reshape(-1, probs.shape[-1])[valid]
                    if isinstance(layer, DeepSeekMoE):
                        top = np.argsort(-probs, axis=-1)[:, :layer.top_k]
                        load = np.bincount(top.reshape(-1), minlength=probs.shape[-1])
                    else:
                        load = probs.sum(axis=0)
                    entry = sums[layer.name].setdefault(router, {"gate": 0.0, "load": 0.0})
                    entry["gate"] = entry["gate"] + probs.sum(axis=0)
                    entry["load"] = entry["load"] + load
        return {layer: {router: {"mean_gate": (s["gate"] / np.sum(s["gate"])).round(6).tolist(),
                                 "load": (s["load"] / np.sum(s["load"])).round(6).tolist()}
                        for router, s in routers.items()}
                for layer, routers in sums.items()}


def gate_statistics(model: keras.Model, batches) -> Dict[str, Dict[str, Dict[str, list]]]:
    """GateProbe(model)(batches): the gates' statistics once."""
    return GateProbe(model)(batches)
