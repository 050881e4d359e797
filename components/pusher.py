"""TFX's Pusher, with a new model version that appears in the serving folder whole or not at all.

TFX's executor copies straight into `<serving folder>/<version>/` (saved_model.pb last): a run killed
mid-copy leaves a partial version folder that TF Serving would try to load as the newest. Here the
copy goes to a hidden `.<version>.incomplete` folder beside it, which TF Serving ignores (not a
number), and is renamed into place. A version folder is never written into: the new version is past
the highest one there. A left-over incomplete folder from a killed push is removed by the next push.
"""
import os
import time

from absl import logging
from tfx.components.pusher import component as tfx_pusher_component
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

INCOMPLETE = ".incomplete"


def serving_versions(serving_dir: str) -> list:
    """The version numbers in a serving folder (none when it does not exist yet)."""
    return [int(name) for name in fileio.listdir(serving_dir) if name.isdigit()] \
        if fileio.exists(serving_dir) else []


def next_version(serving_dir: str) -> int:
    """The current Unix time, or one past the highest version already there (a clock set back must
    not hide a new model behind an older one)."""
    return max([int(time.time()), *[v + 1 for v in serving_versions(serving_dir)]])


def push_atomically(model_path: str, serving_dir: str) -> str:
    """Copies the SavedModel at `model_path` into a new version folder of `serving_dir`; returns it."""
    fileio.makedirs(serving_dir)
    for name in fileio.listdir(serving_dir):
        if name.startswith(".") and name.endswith(INCOMPLETE):
            fileio.rmtree(os.path.join(serving_dir, name))
    version = next_version(serving_dir)
    staging = os.path.join(serving_dir, f".{version}{INCOMPLETE}")
    final = os.path.join(serving_dir, str(version))
    io_utils.copy_dir(model_path, staging)
    fileio.rename(staging, final)
    return final


class Executor(tfx_pusher.Executor):
    """Pushes to a filesystem destination with `push_atomically`."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
            pusher_pb2.PushDestination())
        final = push_atomically(model_path, destination.filesystem.base_directory)
        logging.info("Model written to serving path %s.", final)
        io_utils.copy_dir(model_path, model_push.uri)  # the artifact's own copy, as TFX keeps it
        self._MarkPushed(model_push, pushed_destination=final,
                         pushed_version=os.path.basename(final))


class Pusher(tfx_pusher_component.Pusher):
    """tfx.components.Pusher with the atomic executor (same inputs, outputs and node id)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
