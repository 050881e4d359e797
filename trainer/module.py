"""TFX module file for the Tuner and the Trainer.

`tuner_fn` searches task loss weights (and optionally learning rate and routing) with Keras Tuner;
`run_fn` trains the multi-task model with the best trial's values (or the config's) and exports it
for serving.
"""
import json
import os

from absl import logging

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult
from tfx_bsl.public import tfxio

from mtmoe.core.config import MULTILABEL, Config
from mtmoe.core.console import say
from mtmoe.core.feature_names import TOKENS
from mtmoe.core.file_names import (EXPORT_KEY, GATES_FILE, HISTORY_FILE, TENSORBOARD_DIR,
                                   TRAINING_FILE, TUNING_DIR_KEY)
from mtmoe.core.tasks import OBJECTIVE, primary_validation_metric
from mtmoe.trainer import warm_start, word_vectors
from mtmoe.trainer.calibration import choose_rejections, eval_outputs, fit_temperatures
from mtmoe.trainer.callbacks import (EpochProgress, ExpertLoad, TimeLimit, TrialProgress,
                                     epoch_callbacks)
from mtmoe.trainer.distribution import distribution_strategy, output_folders, shard_by_example
from mtmoe.trainer.export import export_serving_model
from mtmoe.trainer.features import (drop_rare_words, model_inputs, model_targets, rare_token_ids,
                                    text_lengths, trim_to_longest, vocabularies, vocabulary_sizes)
from mtmoe.trainer.introspection import GateProbe
from mtmoe.trainer.model import EMBEDDING, build_model, compile_model, effective_loss_weights
from mtmoe.trainer.tuning import SearchBudget, apply_hyperparameters, define_search_space, make_tuner

EXPERT_LOAD_BATCHES = 8  # eval batches the experts' load is measured on after each epoch
BUCKET_POOL = 32  # training.length_bucketing: batches read at once and regrouped by text length
WARMUP_TEXTS = 8


def dtype_policy(setting: str) -> str:
    """Mixed precision only where a GPU can use it; float16 SavedModels are slow on CPU."""
    if setting != "auto":
        return setting
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def make_dataset(file_pattern, data_accessor, tft_output, config, num_classes, shuffle: bool):
    """(inputs, targets) batches, each cut to its longest text; one pass over the files per epoch.
    Training data (`shuffle`) gets word dropout (`training.word_dropout`) and, with
    `training.length_bucketing`, batches of texts of similar length (by_length)."""
    batch_size = config.training.batch_size
    bucketing = shuffle and config.training.length_bucketing
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size * (BUCKET_POOL if bucketing else 1),
                                       shuffle=shuffle, shuffle_seed=config.training.seed,
                                       num_epochs=1),
        tft_output.transformed_metadata.schema)
    dataset = dataset.map(lambda features: (model_inputs(features),
                                            model_targets(features, config.tasks, num_classes)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if bucketing:
        dataset = by_length(dataset, batch_size, config.training.seed)
    rate = config.training.word_dropout if shuffle else 0.0  # training data only
    rare_ids = rare_token_ids(tft_output) if rate else None

    def prepare(inputs, targets, seed=None):
        if rate:
            inputs = drop_rare_words(inputs, rare_ids, rate, seed)
        return trim_to_longest(inputs, targets, config.tasks)

    if rate:  # each batch's word-dropout seed: from the training seed, new every epoch
        seeds = tf.data.Dataset.random(seed=config.training.seed,
                                       rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(lambda batch, seed: (*batch, seed))
    return shard_by_example(without_autotuning(
        dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)))


def by_length(pools: tf.data.Dataset, batch_size: int, seed: int) -> tf.data.Dataset:
    """Pools of shuffled (inputs, targets) rows -> batches of `batch_size` texts of similar
    length, each pool sorted by length and cut into batches, the batches of a few pools shuffled.
    A batch is cut to its longest text (trim_to_longest), so padding shrinks: random batches of
    Banking77 hold 3.2x the tokens of their texts, sorted ones 1.01x; SNIPS 1.9x. The texts of an
    epoch and its randomness stay; which texts share a batch changes."""
    def sorted_batches(inputs, targets):
        order = tf.argsort(text_lengths(inputs), stable=True)
        rows = tf.nest.map_structure(lambda value: tf.gather(value, order), (inputs, targets))
        return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)

    return pools.flat_map(sorted_batches).shuffle(
        2 * BUCKET_POOL, seed=seed, reshuffle_each_iteration=True)


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with tf.data's autotuning off (AUTOTUNE then means TensorFlow's fixed defaults).
    With it on, the end of a Keras epoch could wait for the autotuner's next wake-up (its period
    doubles from 10 ms: 10.2, 20.5, 41.0 s after the iterator starts): 3 of 5 SNIPS epochs of
    about 25 s took 40.97-40.99 s. Reading and preparing batches is about 3% of an epoch here, so
    tuning it gains nothing."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def sample_texts(file_pattern, tft_output, count: int):
    """Texts of the first `count` transformed examples, rebuilt from their raw tokens."""
    files = [f for pattern in file_pattern for f in tf.io.gfile.glob(pattern)]
    spec = {TOKENS: tft_output.transformed_feature_spec()[TOKENS]}
    texts = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count):
        tokens = tf.io.parse_single_example(record, spec)[TOKENS].numpy()
        texts.append(" ".join(t.decode("utf-8") for t in tokens if t))
    return texts


def _write_json(folder, name, value):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump(value, f, indent=1)


class _Inputs:
    """What both the Tuner and the Trainer read: config, vocabularies, datasets."""

    def __init__(self, fn_args):
        self.config = Config.from_dict(fn_args.custom_config["config"])
        # Seeded before the datasets: their shuffle order depends on TensorFlow's global seed too,
        # so a Trainer after the Tuner in one process would otherwise see another order than a
        # Trainer whose Tuner was cached.
        keras.utils.set_random_seed(self.config.training.seed)
        self.tft_output = tft_output = tft.TFTransformOutput(fn_args.transform_graph_path)
        self.vocabularies = vocabularies(tft_output, self.config)
        self.class_names = {task.name: self.vocabularies[task.name] for task in self.config.tasks}
        self.num_classes = {name: len(v) for name, v in self.class_names.items()}
        self.vocabulary_sizes = vocabulary_sizes(tft_output, self.config)
        self.train = make_dataset(fn_args.train_files, fn_args.data_accessor, tft_output,
                                  self.config, self.num_classes, shuffle=True)
        self.evaluation = make_dataset(fn_args.eval_files, fn_args.data_accessor, tft_output,
                                       self.config, self.num_classes, shuffle=False)
        self.word_vectors, self.word_vector_coverage = {}, None
        path = self.config.model.word_vectors
        if path:  # read once, for every model (trial) built from these inputs
            self.word_vectors = word_vectors.read_vectors(path, self.vocabularies[warm_start.TOKENS],
                                                          self.config.model.embedding_dim)
            self.word_vector_coverage = word_vectors.coverage(path, self.word_vectors,
                                                              self.vocabularies[warm_start.TOKENS])
            logging.info("word vectors: %d of %d vocabulary words found (hit rate %.1f%%) in %s",
                         self.word_vector_coverage["covered"], self.word_vector_coverage["vocabulary"],
                         100 * self.word_vector_coverage["hit_rate"], path)

    def model(self, config):
        model = build_model(config, self.vocabulary_sizes, self.num_classes)
        if self.word_vectors:
            word_vectors.initialise(model.get_layer(EMBEDDING).tokens.embeddings,
                                    self.vocabularies[warm_start.TOKENS], self.word_vectors)
        return compile_model(model, config)

    def callbacks(self, config, epochs: int):
        return epoch_callbacks(config, epochs, self.evaluation, self.class_names)


def tensorboard_callbacks(log_dir: str, probe: GateProbe, evaluation) -> list:
    """TensorBoard logs: every logged value per epoch (each task's losses and metrics, train and
    validation, the learning rate, epoch seconds) and, for a gated trunk, the experts' load as
    `probe` (the model's) measures it."""
    callbacks = [keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)]
    if probe.layers:
        batches = [inputs for inputs, _ in evaluation.take(EXPERT_LOAD_BATCHES)]
        callbacks.append(ExpertLoad(log_dir, batches, probe))
    return callbacks


def best_epoch_callback(config, epochs: int) -> keras.callbacks.EarlyStopping:
    """Keeps the weights of the epoch with the best `val_objective` (every task's primary metric on
    the eval split, the Tuner's objective too) and stops after `training.patience` epochs without
    a better one (0: runs every epoch)."""
    return keras.callbacks.EarlyStopping(
        monitor=f"val_{OBJECTIVE}", mode="max", patience=config.training.patience or epochs,
        restore_best_weights=True)


def kept_epoch(callback: keras.callbacks.EarlyStopping, history, limit=None) -> dict:
    """Which epoch's weights the model holds after training, and why (`limit`: the TimeLimit
    callback, if the run had one)."""
    ran = len(history.history["loss"])
    reason = f"best val_{OBJECTIVE} of {ran} epochs"
    if callback.stopped_epoch:
        reason += f"; stopped after {callback.patience} without a better one"
    elif limit is not None and limit.stopped_after:
        reason += f"; stopped at training.max_minutes ({limit.seconds / 60:g} min)"
    return {"epoch": callback.best_epoch + 1, "epochs_run": ran,
            "val_objective": float(callback.best), "reason": reason}


def set_thresholds(model, config, history, kept: int) -> dict:
    """Folds each multi-label task's decision threshold of the kept epoch (chosen on eval by
    ValidationScores) into its output layer; returns {task: threshold}."""
    thresholds = {task.name: history.history[f"val_{task.name}_threshold"][kept]
                  for task in config.tasks if task.type == MULTILABEL}
    for name, threshold in thresholds.items():
        model.get_layer(name).set_threshold(threshold)
    return thresholds


def tuner_fn(fn_args) -> TunerFnResult:
    inputs = _Inputs(fn_args)
    config = inputs.config

    def build(hp):
        return inputs.model(apply_hyperparameters(config, define_search_space(hp, config)))

    tuner = make_tuner(config, build, fn_args.custom_config[TUNING_DIR_KEY])
    return TunerFnResult(tuner=tuner, fit_kwargs={
        "x": inputs.train, "validation_data": inputs.evaluation,
        "epochs": config.tuning.epochs_per_trial, "verbose": 2,
        "callbacks": inputs.callbacks(config, config.tuning.epochs_per_trial) + [
            SearchBudget(tuner.oracle, config.tuning.budget_minutes * 60),
            TrialProgress(config.tuning.max_trials)]})


def _warm_start(model, config, vocabularies, base_model):
    """Loads the latest blessed model's weights into `model` when they fit; logs and returns which."""
    if not config.training.warm_start:
        started = {"warm_started": False, "base_model": None, "reason": "training.warm_start is false"}
    else:
        # `base_model` is the blessed model's SavedModel folder inside its artifact.
        started = warm_start.restore(model, config, vocabularies,
                                     os.path.dirname(base_model) if base_model else None)
    if started["warm_started"]:
        logging.info("warm start from %s; carried over: %s", started["base_model"], started["carried"])
    else:
        logging.info("training from scratch: %s", started["reason"])
        if started["base_model"]:  # a blessed model that could not be started from: say why
            changed = started.get("changed", [])
            why = (f"the config changed the model ({', '.join(changed[:3])}"
                   + (f" and {len(changed) - 3} more" if len(changed) > 3 else "") + ")"
                   if changed else started["reason"])
            say(f"Trainer: training from scratch ({config.training.epochs} epochs), not from the "
                f"blessed model: {why}")
    return started


def run_fn(fn_args):
    # Models the Tuner built in this process would break a distributed one's collective ops.
    keras.backend.clear_session()
    inputs = _Inputs(fn_args)
    searched = {}
    if fn_args.hyperparameters:
        searched = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters).values
    config = apply_hyperparameters(inputs.config, searched)
    keras.mixed_precision.set_global_policy(dtype_policy(config.training.mixed_precision))
    strategy = distribution_strategy(config.training.distribution)
    try:
        with output_folders(strategy, fn_args.model_run_dir, fn_args.serving_model_dir) as (
                model_run_dir, serving_model_dir):
            _train(fn_args, inputs, config, searched, strategy, model_run_dir, serving_model_dir)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError) as e:
        if config.training.distribution != "multi_worker":
            raise
        raise RuntimeError(
            "a training worker stopped answering, so the multi-worker training stopped: every "
            "worker in TF_CONFIG must run until the Trainer ends; restart them and the run "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e
    finally:
        # The policy is process-global; under LocalDagRunner the next component shares this process.
        keras.mixed_precision.set_global_policy("float32")


def _train(fn_args, inputs, config, searched, strategy, model_run_dir, serving_model_dir):
    """Trains, keeps the best epoch, writes the history and (unless a reference training) the
    warm-start weights, gate statistics and the serving export, into this worker's folders."""
    with strategy.scope():
        model = inputs.model(config)
        started = _warm_start(model, config, inputs.vocabularies, fn_args.base_model)
    epochs = config.training.warm_start_epochs if started["warm_started"] else config.training.epochs
    best = best_epoch_callback(config, epochs)
    limit = (TimeLimit(config.training.max_minutes * 60, strategy)
             if config.training.max_minutes else None)
    probe = GateProbe(model)  # one graph: the expert load of each epoch, the final statistics
    board = tensorboard_callbacks(os.path.join(model_run_dir, TENSORBOARD_DIR), probe,
                                  inputs.evaluation)
    history = model.fit(inputs.train, validation_data=inputs.evaluation, epochs=epochs,
                        callbacks=inputs.callbacks(config, epochs) + board + [
                            best, EpochProgress("Trainer", epochs)] + ([limit] if limit else []),
                        verbose=2)
    thresholds = set_thresholds(model, config, history, best.best_epoch)
    outputs = eval_outputs(model, config.tasks, inputs.evaluation)
    calibration = fit_temperatures(outputs, config.tasks)
    temperatures = {task: fit["temperature"] for task, fit in calibration.items()}
    rejection = choose_rejections(outputs, config.tasks, temperatures)
    _write_json(model_run_dir, HISTORY_FILE,
                {k: [float(v) for v in vs] for k, vs in history.history.items()})
    _write_json(model_run_dir, TRAINING_FILE, {
        "loss_weighting": config.training.loss_weighting,
        "loss_weights": effective_loss_weights(model, config),
        "hyperparameters": searched,
        "warm_start": started,
        "word_vectors": inputs.word_vector_coverage,
        "epochs": epochs,
        "kept_epoch": kept_epoch(best, history, limit),
        "multilabel_thresholds": thresholds,
        "calibration": calibration,
        "rejection": rejection,
        "epoch_seconds": history.history["epoch_seconds"],
        "parameters": model.count_params(),
        "replicas": strategy.num_replicas_in_sync,
    })
    if fn_args.custom_config.get(EXPORT_KEY, True):
        warm_start.save(model, config, inputs.vocabularies, os.path.dirname(serving_model_dir))
        _write_json(model_run_dir, GATES_FILE, probe(inputs.evaluation.map(lambda x, _: x)))
        kept = {task.name: history.history.get(primary_validation_metric(task))
                for task in config.tasks}
        export_serving_model(model, inputs.tft_output, config, serving_model_dir,
                             sample_texts(fn_args.eval_files, inputs.tft_output, WARMUP_TEXTS),
                             temperatures, {task: r["reject_below"] for task, r in rejection.items()},
                             {name: float(values[best.best_epoch])
                              for name, values in kept.items() if values})
    else:  # TFX's Trainer requires the folder; a reference training leaves it empty
        tf.io.gfile.makedirs(serving_model_dir)
