"""Can the stock TF Serving image load this SavedModel? Every op in its graph must be a core
TensorFlow op or one that tensorflow-text 2.12.1 (the version the image embeds) registers.

Core ops are those TensorFlow registers before tensorflow-text loads, listed in a fresh Python
process; the tf-text list is committed in tf_text_ops/ with the script that produced it.
"""
import os
import subprocess
import sys
from typing import List, Set

from mtmoe.core.errors import UserError

TF_TEXT_VERSION = "2.12.1"
TF_TEXT_OPS_FILE = os.path.join(os.path.dirname(__file__), "tf_text_ops",
                                f"tf_text_{TF_TEXT_VERSION}.txt")
_LIST_CORE_OPS = ("from mtmoe.serving.tf_text_ops.list_ops import registered_ops; "
                  "print('\\n'.join(sorted(registered_ops())))")


def graph_ops(saved_model_dir: str) -> Set[str]:
    """Every op type in a SavedModel: its graphs and all the functions in their libraries."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(saved_model_dir, "saved_model.pb")
    if not os.path.isfile(path):
        raise UserError(f"{saved_model_dir}: no saved_model.pb")
    with open(path, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def core_ops() -> Set[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", _LIST_CORE_OPS], capture_output=True, text=True,
                            cwd=root, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return set(result.stdout.split())


def tf_text_ops() -> Set[str]:
    with open(TF_TEXT_OPS_FILE) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def unsupported_ops(saved_model_dir: str) -> List[str]:
    """The graph's ops that the stock TF Serving image does not have, sorted (empty: it loads)."""
    return sorted(graph_ops(saved_model_dir) - core_ops() - tf_text_ops())
