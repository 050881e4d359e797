"""Prints the TensorFlow ops that tensorflow-text registers, one per line, sorted.

Run it with the TensorFlow and tensorflow-text versions to list, for example the ones the stock
`tensorflow/serving` image embeds (this produced tf_text_2.12.1.txt next to it):

    python3.10 -m venv /tmp/tft212
    /tmp/tft212/bin/pip install tensorflow-cpu==2.12.1 tensorflow-text==2.12.1
    /tmp/tft212/bin/python serving/tf_text_ops/list_ops.py > serving/tf_text_ops/tf_text_2.12.1.txt

It needs nothing from this project, so it runs in that separate environment.
"""
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session


def registered_ops():
    buffer = pywrap_tf_session.TF_GetAllOpList()
    return {op.name for op in op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer)).op}


if __name__ == "__main__":
    core = registered_ops()
    import tensorflow_text

    print(f"# tensorflow-text {tensorflow_text.__version__} on TensorFlow {tf.__version__}")
    print("\n".join(sorted(registered_ops() - core)))
