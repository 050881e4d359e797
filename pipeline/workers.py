"""The other workers of a multi-worker training: each finds the Trainer the chief (`mtmoe run`) has
started in the work dir's ML Metadata and runs the same `run_fn` on the same inputs.

ML Metadata records a running execution with its input artifacts and properties before the
executor starts, so a worker sees exactly what the chief's Trainer reads. The work dir must be
shared with the chief (a network file system; on a cluster, Vertex AI starts every worker itself).
"""
import json
import os
import time

from ml_metadata.proto import metadata_store_pb2
from tfx.components.trainer import fn_args_utils
from tfx.types import artifact_utils

from mtmoe.core.errors import UserError
from mtmoe.pipeline.local_runner import TRAINER, read_only_store
from mtmoe.pipeline.paths import Paths

POLL_SECONDS = 2.0
UNKEPT = "/nonexistent/mtmoe-worker"  # never written: see worker_fn_args


def trainer_fn_args(store, execution):
    """TFX's FnArgs for `execution` (a Trainer's), as its executor builds them from the input
    artifacts and execution properties ML Metadata recorded; no output folders set."""
    types = {t.id: t for t in store.get_artifact_types()}
    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    stored = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    inputs = {}
    for event in events:
        artifact = stored[event.artifact_id]
        inputs.setdefault(event.path.steps[0].key, []).append(
            artifact_utils.deserialize_artifact(types[artifact.type_id], artifact))
    properties = {name: value.string_value for name, value in execution.custom_properties.items()}
    fn_args = fn_args_utils.get_common_fn_args(inputs, properties)
    fn_args.hyperparameters = None
    if inputs.get("hyperparameters"):  # the Tuner's best trial, as the Trainer's executor reads it
        folder = inputs["hyperparameters"][0].uri
        name, = os.listdir(folder)
        with open(os.path.join(folder, name)) as f:
            fn_args.hyperparameters = json.load(f)
    return fn_args


def wait_for_trainer(paths: Paths, pipeline_name: str, started_after: float, timeout: float):
    """(store, the Trainer execution) the chief started after `started_after` (epoch seconds);
    a UserError after `timeout` seconds without one."""
    deadline = time.monotonic() + timeout
    node_name = f"{pipeline_name}.{TRAINER}"
    while True:
        if os.path.exists(paths.metadata):
            store = read_only_store(paths)
            node = store.get_context_by_type_and_name("node", node_name)
            running = [e for e in (store.get_executions_by_context(node.id) if node else [])
                       if e.last_known_state == metadata_store_pb2.Execution.RUNNING
                       and e.create_time_since_epoch >= started_after * 1000]
            if running:
                return store, max(running, key=lambda e: e.id)
        if time.monotonic() > deadline:
            raise UserError(f"no Trainer of pipeline {pipeline_name} started in {paths.work_dir} "
                            f"within {timeout:.0f} s: start `mtmoe run` with this config and work "
                            "dir (TF_CONFIG task index 0) and this worker together")
        time.sleep(POLL_SECONDS)


def worker_fn_args(paths: Paths, pipeline_name: str, started_after: float, timeout: float):
    """(the execution id, the running Trainer's FnArgs). A worker other than the chief writes
    into temporary folders of its own (mtmoe.trainer.distribution.output_folders) that only take their
    names from these output folders."""
    store, execution = wait_for_trainer(paths, pipeline_name, started_after, timeout)
    fn_args = trainer_fn_args(store, execution)
    fn_args.serving_model_dir = os.path.join(UNKEPT, "model", "Format-Serving")
    fn_args.model_run_dir = os.path.join(UNKEPT, "model_run")
    return execution.id, fn_args
