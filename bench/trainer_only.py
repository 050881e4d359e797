"""The Trainer alone, on the Transform output of an earlier `mtmoe run`: for choosing model settings
on the eval split (SNIPS dev) without re-running the pipeline around it.

    python bench/trainer_only.py --work-dir bench/work/snips --config mtmoe/configs/snips.yaml \
        [--set model.dropout=0.3 --set training.epochs=20 ...] [--label NAME] [--out FILE.jsonl]

Calls the project's `run_fn` exactly as the Trainer does (same datasets, callbacks, best-epoch
selection), without the export, with the inputs ML Metadata recorded for that work dir's latest
Transform. Prints, and appends to `--out`, one JSON line: the settings, seconds per epoch, the kept
epoch and its eval metrics. Eval (dev) only: test numbers come from the whole pipeline
(bench/snips_quality.py).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import yaml


def _overridden(config_path: str, settings):
    """The config with each `section.field=value` applied (values read as YAML) and warm start off:
    every run trains from scratch."""
    from mtmoe.core.config import load_config

    with open(config_path) as f:
        raw = yaml.safe_load(f)
    for setting in settings:
        key, _, value = setting.partition("=")
        section, _, field = key.partition(".")
        raw.setdefault(section, {})[field] = yaml.safe_load(value)
    raw.setdefault("training", {})["warm_start"] = False
    raw.setdefault("validation", {})["schema"] = load_config(config_path).validation.schema
    path = os.path.join(tempfile.mkdtemp(), os.path.basename(config_path))
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return load_config(path)


def _transform_outputs(work_dir: str, pipeline_name: str):
    """(the transformed Examples artifact, the transform graph's uri) of the latest Transform."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = os.path.join(work_dir, "metadata.sqlite")
    store = metadata_store.MetadataStore(connection)
    types = {t.id: t for t in store.get_artifact_types()}
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.Transform")
    execution = max(store.get_executions_by_context(node.id), key=lambda e: e.id)
    outputs = {}
    for event in store.get_events_by_execution_ids([execution.id]):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            artifact, = store.get_artifacts_by_id([event.artifact_id])
            outputs[event.path.steps[0].key] = artifact_utils.deserialize_artifact(
                types[artifact.type_id], artifact)
    return outputs["transformed_examples"], outputs["transform_graph"].uri


def _take_turns(spec: str) -> None:
    """The Trainer's epochs wait for the baton before their first callback (the epoch timer) and
    give it after their last (the progress line, after validation)."""
    import keras

    import mtmoe.trainer.module as module
    from baton import Baton

    baton = Baton(spec)

    class Take(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            baton.take()

    class ProgressThenGive(module.EpochProgress):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            baton.give()

        def on_train_end(self, logs=None):
            baton.finish()

    epoch_callbacks = module.epoch_callbacks
    module.epoch_callbacks = lambda *args: [Take()] + epoch_callbacks(*args)
    module.EpochProgress = ProgressThenGive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--label", default="")
    parser.add_argument("--out")
    parser.add_argument("--baton", metavar="FILE:MINE:OTHER",
                        help="take turns, an epoch at a time, with another training (bench/baton.py)")
    args = parser.parse_args()

    import mtmoe  # noqa: F401  the Keras environment before TensorFlow loads
    from tfx.components.trainer.fn_args_utils import DataAccessor
    from tfx.components.util import tfxio_utils

    from mtmoe.trainer.module import run_fn

    from mtmoe.core.file_names import EXPORT_KEY, HISTORY_FILE, TRAINING_FILE

    if args.baton:
        _take_turns(args.baton)
    config = _overridden(args.config, args.set)
    examples, transform_graph = _transform_outputs(os.path.abspath(args.work_dir),
                                                   config.pipeline.name)

    class FnArgs:  # what run_fn reads of TFX's FnArgs
        pass

    fn_args = FnArgs()
    fn_args.train_files = [os.path.join(examples.uri, "Split-train", "*")]
    fn_args.eval_files = [os.path.join(examples.uri, "Split-eval", "*")]
    fn_args.transform_graph_path = transform_graph
    fn_args.custom_config = {"config": config.to_dict(), EXPORT_KEY: False}
    fn_args.hyperparameters = None
    fn_args.base_model = None
    out = tempfile.mkdtemp()
    fn_args.serving_model_dir = os.path.join(out, "Format-Serving")
    fn_args.model_run_dir = os.path.join(out, "run")
    fn_args.data_accessor = DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=None, data_view_decode_fn=None)

    started = time.perf_counter()
    run_fn(fn_args)
    with open(os.path.join(fn_args.model_run_dir, HISTORY_FILE)) as f:
        history = json.load(f)
    with open(os.path.join(fn_args.model_run_dir, TRAINING_FILE)) as f:
        training = json.load(f)
    kept = training["kept_epoch"]["epoch"] - 1
    row = {"label": args.label, "settings": args.set, "seconds": round(time.perf_counter() - started, 1),
           "epoch_seconds": history["epoch_seconds"], "kept_epoch": kept + 1,
           "epochs_run": len(history["loss"]),
           "eval": {k[4:]: round(v[kept], 4) for k, v in history.items()
                    if k.startswith("val_") and not k.endswith("_loss")}}
    print(json.dumps(row))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
