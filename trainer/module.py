"""TFX Trainer module: `run_fn` trains the multi-task model and exports it for serving."""
import json
import os

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from mtmoe.config import Config
from serving.export import export_serving_model
from trainer.callbacks import ValidationScores
from trainer.features import class_names, model_inputs, model_targets, vocabulary_sizes
from trainer.introspection import gate_statistics
from trainer.model import build_model, compile_model

HISTORY_FILE = "history.json"
GATES_FILE = "gate_statistics.json"


def dtype_policy(setting: str) -> str:
    """Mixed precision only where a GPU can use it; float16 SavedModels are slow on CPU."""
    if setting != "auto":
        return setting
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def make_dataset(file_pattern, data_accessor, tft_output, config, num_classes, shuffle: bool):
    """(inputs, targets) batches, one pass over the files per epoch."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=config.training.batch_size, shuffle=shuffle,
                                       shuffle_seed=config.training.seed, num_epochs=1),
        tft_output.transformed_metadata.schema)
    return dataset.map(
        lambda features: (model_inputs(features), model_targets(features, config.tasks, num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _write_json(folder, name, value):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump(value, f, indent=1)


def run_fn(fn_args):
    config = Config.from_dict(fn_args.custom_config["config"])
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    names = {task.name: class_names(tft_output, task) for task in config.tasks}
    num_classes = {name: len(v) for name, v in names.items()}
    keras.utils.set_random_seed(config.training.seed)
    keras.mixed_precision.set_global_policy(dtype_policy(config.training.mixed_precision))
    try:
        train = make_dataset(fn_args.train_files, fn_args.data_accessor, tft_output, config,
                             num_classes, shuffle=True)
        evaluation = make_dataset(fn_args.eval_files, fn_args.data_accessor, tft_output, config,
                                  num_classes, shuffle=False)
        model = compile_model(
            build_model(config, vocabulary_sizes(tft_output, config), num_classes), config)
        history = model.fit(train, validation_data=evaluation, epochs=config.training.epochs,
                            callbacks=[ValidationScores(evaluation, config.tasks, names)], verbose=2)
        _write_json(fn_args.model_run_dir, HISTORY_FILE,
                    {k: [float(v) for v in vs] for k, vs in history.history.items()})
        _write_json(fn_args.model_run_dir, GATES_FILE,
                    gate_statistics(model, evaluation.map(lambda inputs, _: inputs)))
        export_serving_model(model, tft_output, config, fn_args.serving_model_dir)
    finally:
        # The policy is process-global; under LocalDagRunner the next component shares this process.
        keras.mixed_precision.set_global_policy("float32")
