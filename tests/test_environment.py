"""The environment `import mtmoe` gives TensorFlow before it loads."""
import os
import subprocess
import sys

PROBE = ("import mtmoe, os, tensorflow as tf\n"
         "from tensorflow.python.util import _pywrap_util_port\n"
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], _pywrap_util_port.IsMklEnabled())")


def _probe(**env):
    base = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_onednn_kernels_are_off_unless_the_user_asks_for_them():
    assert _probe() == ["0", "False"]
    assert _probe(TF_ENABLE_ONEDNN_OPTS="1") == ["1", "True"]
