"""mtmoe: multi-task text models trained and shipped by a TFX pipeline."""
import os

# Keras 3 for our models and keras-tuner; TFT and TFMA import tf_keras themselves. TFT would set this
# to 1 when unset, so it must be decided before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN kernels cost more to set up than they save on our small tensors: one text
# through serving_default took 3.9-4.7 ms with them and 2.65-2.73 ms without, a training epoch the
# same time (README Results, serving). TF Serving reads the same variable (README, Serving).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
