"""Names of the files, and of the Trainer's custom_config keys, that one stage writes and another
reads: here, so that a reader (the report, the history, the command line, a benchmark) does not
import the writer's code and with it TensorFlow."""
import os

# The Trainer's model_run folder.
HISTORY_FILE = "history.json"
GATES_FILE = "gate_statistics.json"
TRAINING_FILE = "training.json"
TENSORBOARD_DIR = "tensorboard"

# Inside every exported SavedModel: the config it was trained with, and the requests TF Serving
# replays when it loads a version, before it takes traffic.
CONFIG_FILE = os.path.join("assets.extra", "mtmoe_config.json")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# ...and its primary score per task on the eval split it was trained beside (the kept epoch's, as
# the Evaluator measures it): what the served-model check compares a new span's scores with.
EVAL_SCORES_FILE = os.path.join("assets.extra", "mtmoe_eval_scores.json")

# TestScorer's output, and the data gate's: {split: [anomaly line]} it found and allowed.
METRICS_FILE = "metrics.json"
# The served-model check's: the serving model's scores on the new span, and the decision.
SERVED_CHECK_FILE = "served_model.json"
BREAKDOWN_FILE = "breakdown.json"
GATE_FILE = "anomalies.json"

# The name TF Serving serves the model under (`/v1/models/<name>`), in the deployment files the
# pipeline writes and as the clients' and the local server's default.
SERVED_MODEL_NAME = "mtmoe"

# The package our Keras layers and losses are registered under ("mtmoe>ClassName"), by which a
# saved Keras model finds them.
KERAS_PACKAGE = "mtmoe"

# Trainer custom_config keys: the tuner's folder, and false for a reference training that only
# records its history (`tune --compare`).
TUNING_DIR_KEY = "tuning_dir"
EXPORT_KEY = "export"
