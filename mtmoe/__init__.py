"""mtmoe: multi-task text models trained and shipped by a TFX pipeline."""
import os

# Keras 3 for our models and keras-tuner; TFT and TFMA import tf_keras themselves. TFT would set this
# to 1 when unset, so it must be decided before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
