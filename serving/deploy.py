"""TF Serving deployment files: the model config and the batching parameters, as text protos.

`models.config` is a ModelServerConfig (tensorflow-serving-api's proto): one model, served from the
folder the Pusher writes integer versions into, latest version only. `batching.config` is a
BatchingParameters text proto. tensorflow-serving-api does not ship that message
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto), so its fields are declared
here with the upstream field numbers and types, and the file is written and parsed through them.
"""
import os
from typing import Optional

from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory, text_format,
                             wrappers_pb2)
from tensorflow_serving.config import model_server_config_pb2

MODEL_CONFIG_FILE = "models.config"
BATCHING_CONFIG_FILE = "batching.config"
CONTAINER_MODELS_DIR = "/models"


def _batching_parameters_class():
    field = descriptor_pb2.FieldDescriptorProto
    wrapper = {"int64": ".google.protobuf.Int64Value", "string": ".google.protobuf.StringValue"}
    fields = [("max_batch_size", 1, wrapper["int64"]), ("batch_timeout_micros", 2, wrapper["int64"]),
              ("max_enqueued_batches", 3, wrapper["int64"]), ("num_batch_threads", 4, wrapper["int64"]),
              ("thread_pool_name", 5, wrapper["string"])]
    proto = descriptor_pb2.FileDescriptorProto(
        name="mtmoe/session_bundle_config_batching.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    for name, number, type_name in fields:
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, type_name=type_name,
                          label=field.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                      label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                      label=field.LABEL_OPTIONAL)
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(wrappers)
    pool.Add(proto)
    return message_factory.MessageFactory(pool).GetPrototype(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParameters = _batching_parameters_class()


def model_server_config(model_name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=model_name, base_path=base_path,
                                                model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 1
    return config


def batching_parameters(max_batch_size: int = 32, batch_timeout_micros: int = 0,
                        num_batch_threads: Optional[int] = None):
    """Batches of up to 32 texts, formed without waiting: TF Serving's batching guide starts a
    CPU-only server at `batch_timeout_micros` 0, with which a lone request runs at once and the
    requests that arrive while every batch thread is busy share the next batch. A wait (the guide
    tries 1-10 ms) trades each request's latency for fuller batches. Without `num_batch_threads`
    the field is left out, and TF Serving runs as many batch threads as the serving machine has
    cores (the guide's advice for CPU-only servers; the pipeline cannot know that machine)."""
    parameters = BatchingParameters()
    parameters.max_batch_size.value = max_batch_size
    parameters.batch_timeout_micros.value = batch_timeout_micros
    parameters.max_enqueued_batches.value = 100
    if num_batch_threads is not None:
        parameters.num_batch_threads.value = num_batch_threads
    parameters.pad_variable_length_inputs = True
    return parameters


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def batch_threads(parameters) -> int:
    """The batch threads a server runs for these parameters: `num_batch_threads`, or as TF Serving
    does without it, one per core this process may run on."""
    if parameters.HasField("num_batch_threads"):
        return max(1, parameters.num_batch_threads.value)
    return _cores()


def op_threads(parameters) -> int:
    """The threads of each of TensorFlow's op pools (intra-op and inter-op) in a server with these
    parameters: the cores each batch thread has to itself, at least one. TensorFlow sizes both
    pools to every core, so with a batch thread per core, a loaded server would run three threads
    per core; with pools of one, a batch runs its ops on its own thread (2 cores, 8 REST clients,
    two paired runs: 1,363 and 1,442 against 1,180 and 1,140 requests/s; batch-1 latency the same,
    batch 32 the same in one run and 1.6 ms slower in the other)."""
    return max(1, _cores() // batch_threads(parameters))


def write_deployment_files(folder: str, model_name: str) -> dict:
    """Writes both files for a container that mounts the serving folder at /models/<model_name>."""
    os.makedirs(folder, exist_ok=True)
    files = {
        MODEL_CONFIG_FILE: model_server_config(model_name, f"{CONTAINER_MODELS_DIR}/{model_name}"),
        BATCHING_CONFIG_FILE: batching_parameters(),
    }
    comments = {BATCHING_CONFIG_FILE: "# TF Serving's --batching_parameters_file. A field with "
                                      "empty braces holds 0: batch_timeout_micros 0 runs each "
                                      "batch without waiting for more requests. Without "
                                      "num_batch_threads, one batch thread per core.\n"}
    for name, proto in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(comments.get(name, "") + text_format.MessageToString(proto))
    return {name: os.path.join(folder, name) for name in files}
