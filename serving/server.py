"""A local endpoint that answers like TF Serving, for development and tests; production is TF Serving.

REST (werkzeug), the paths and JSON shapes of TF Serving's REST API:
  GET  /v1/models/<name>[/versions/<v>]            model status
  GET  /v1/models/<name>[/versions/<v>]/metadata   signature definitions
  POST /v1/models/<name>[/versions/<v>]:predict    {"instances": [...]} (row) or {"inputs": ...}
Bad requests get status 400 and {"error": "..."}; an unknown model or version, 404.
gRPC: tensorflow.serving.PredictionService/Predict, from tensorflow-serving-api's service definition.

The highest integer version in the serving folder is served; a poll loads a newer one when it
appears, and the old one keeps serving until the new one has loaded.
"""
import json
import logging
import os
import re
import threading
from concurrent import futures
from typing import Dict, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

DEFAULT_SIGNATURE = "serving_default"
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<verb>:predict|/metadata)?$")
log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the model cannot answer; its message goes back to the client."""


class LoadedVersion:
    def __init__(self, path: str, version: int):
        self.version = version
        self.model = tf.saved_model.load(path)
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            meta_graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
        self.signature_defs = {name: meta_graph.signature_def[name]
                               for name in self.model.signatures}


class VersionWatcher:
    """Holds the highest complete version of a serving folder and loads newer ones as they appear."""

    def __init__(self, serving_dir: str, poll_seconds: float = 2.0):
        self.serving_dir = serving_dir
        self.poll_seconds = poll_seconds
        self._current: Optional[LoadedVersion] = None
        self._stop = threading.Event()
        self.refresh()
        if self._current is None:
            raise FileNotFoundError(f"{serving_dir}: no version folder with a saved_model.pb")
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _versions(self):
        if not os.path.isdir(self.serving_dir):
            return []
        return sorted(int(v) for v in os.listdir(self.serving_dir) if v.isdigit() and
                      os.path.isfile(os.path.join(self.serving_dir, v, "saved_model.pb")))

    def refresh(self) -> None:
        versions = self._versions()
        if not versions or (self._current and versions[-1] <= self._current.version):
            return
        try:
            loaded = LoadedVersion(os.path.join(self.serving_dir, str(versions[-1])), versions[-1])
        except Exception as e:  # a version still being copied, or a broken one: keep serving
            log.warning("version %s did not load (%s); still serving the previous one", versions[-1], e)
            return
        self._current = loaded
        log.warning("serving version %s", loaded.version)

    def _poll(self):
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def current(self) -> LoadedVersion:
        return self._current

    def stop(self):
        self._stop.set()


def _as_tensor(name: str, values, spec: tf.TensorSpec) -> tf.Tensor:
    values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else None
    if values is None:
        raise RequestError(f"input '{name}': expected a list of values")
    if not values:
        raise RequestError(f"input '{name}': empty batch; send at least one instance")
    if spec.dtype == tf.string:
        for i, value in enumerate(values):
            if isinstance(value, dict) and set(value) == {"b64"}:
                raise RequestError(f"input '{name}': instance {i}: base64 values are not "
                                   "accepted; send text")
            if not isinstance(value, (str, bytes)):
                raise RequestError(f"input '{name}': instance {i} is {json.dumps(value)}; "
                                   "expected a string")
        return tf.constant([v if isinstance(v, bytes) else v.encode("utf-8") for v in values])
    try:
        return tf.constant(np.asarray(values), dtype=spec.dtype)
    except (ValueError, TypeError) as e:
        raise RequestError(f"input '{name}': {e}") from None


def _signature(loaded: LoadedVersion, name: str):
    if name not in loaded.model.signatures:
        raise RequestError(f"unknown signature '{name}'; the model has "
                           f"{', '.join(sorted(loaded.model.signatures))}")
    return loaded.model.signatures[name]


def input_names(loaded: LoadedVersion, signature: str):
    return sorted(_signature(loaded, signature).structured_input_signature[1])


def run_signature(loaded: LoadedVersion, signature: str, inputs: Dict[str, list]
                  ) -> Dict[str, np.ndarray]:
    function = _signature(loaded, signature)
    specs = function.structured_input_signature[1]
    if set(inputs) != set(specs):
        raise RequestError(f"signature '{signature}' takes input(s) {', '.join(sorted(specs))}; "
                           f"got {', '.join(sorted(inputs)) or 'none'}")
    tensors = {name: _as_tensor(name, inputs[name], spec) for name, spec in specs.items()}
    if len({int(t.shape[0]) for t in tensors.values()}) > 1:
        raise RequestError("inputs have different batch sizes")
    return {name: value.numpy() for name, value in function(**tensors).items()}


def _json_value(value):
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value] if value.ndim else _json_value(value.item())
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_request(body: bytes) -> dict:
    try:
        request = json.loads(body or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"malformed JSON: {e}") from None
    if not isinstance(request, dict):
        raise RequestError("the request must be a JSON object with 'instances' or 'inputs'")
    return request


def parse_predict_request(request: dict, names) -> Tuple[Dict[str, list], bool]:
    """({input: values}, row format?) from a TF Serving REST predict request."""
    if ("instances" in request) == ("inputs" in request):
        raise RequestError("the request needs exactly one of 'instances' (row format) or "
                           "'inputs' (columnar format)")
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list):
            raise RequestError("'instances' must be a list")
        if len(names) == 1:
            name = names[0]
            return {name: [i[name] if isinstance(i, dict) and name in i else i
                           for i in instances]}, True
        if not all(isinstance(i, dict) for i in instances):
            raise RequestError(f"each instance must be an object with {', '.join(names)}")
        return {n: [i.get(n) for i in instances] for n in names}, True
    inputs = request["inputs"]
    if isinstance(inputs, dict):
        return inputs, False
    if len(names) != 1:
        raise RequestError(f"'inputs' must be an object with {', '.join(names)}")
    return {names[0]: inputs}, False


class RestApp:
    """The WSGI application of the REST API."""

    def __init__(self, watcher: VersionWatcher, model_name: str):
        self.watcher = watcher
        self.model_name = model_name

    def __call__(self, environ, start_response):
        return self.respond(Request(environ))(environ, start_response)

    @staticmethod
    def _json(value, status=200):
        return Response(json.dumps(value), status=status, mimetype="application/json")

    def respond(self, request: Request) -> Response:
        match = _PATH.match(request.path)
        if not match:
            return self._json({"error": f"unknown path {request.path}"}, 404)
        loaded = self.watcher.current()
        version = match["version"]
        if match["name"] != self.model_name or (version and int(version) != loaded.version):
            return self._json({"error": f"Servable not found for request: {match['name']}"
                                        + (f" version {version}" if version else "")}, 404)
        if match["verb"] == ":predict":
            if request.method != "POST":
                return self._json({"error": "predict needs POST"}, 405)
            return self._predict(loaded, request.get_data())
        if match["verb"] == "/metadata":
            return self._json(self._metadata(loaded))
        return self._json({"model_version_status": [{
            "version": str(loaded.version), "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]})

    def _metadata(self, loaded: LoadedVersion) -> dict:
        return {"model_spec": {"name": self.model_name, "signature_name": "",
                               "version": str(loaded.version)},
                "metadata": {"signature_def": {"signature_def": {
                    name: json_format.MessageToDict(definition, preserving_proto_field_name=True)
                    for name, definition in loaded.signature_defs.items()}}}}

    def _predict(self, loaded: LoadedVersion, body: bytes) -> Response:
        try:
            request = load_request(body)
            signature = request.get("signature_name", DEFAULT_SIGNATURE)
            inputs, rows = parse_predict_request(request, input_names(loaded, signature))
            outputs = run_signature(loaded, signature, inputs)
        except RequestError as e:
            return self._json({"error": str(e)}, 400)
        except tf.errors.OpError as e:
            return self._json({"error": e.message}, 400)
        if not rows:
            return self._json({"outputs": {k: _json_value(v) for k, v in outputs.items()}})
        size = len(next(iter(outputs.values())))
        return self._json({"predictions": [{k: _json_value(v[i]) for k, v in outputs.items()}
                                           for i in range(size)]})


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """gRPC Predict on the served version."""

    def __init__(self, watcher: VersionWatcher, model_name: str):
        self.watcher = watcher
        self.model_name = model_name

    def Predict(self, request, context):
        loaded = self.watcher.current()
        spec = request.model_spec
        if spec.name != self.model_name or (spec.HasField("version") and
                                            spec.version.value != loaded.version):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")
        signature = spec.signature_name or DEFAULT_SIGNATURE
        try:
            outputs = run_signature(loaded, signature, {name: tf.make_ndarray(proto).tolist()
                                                        for name, proto in request.inputs.items()})
        except (RequestError, tf.errors.OpError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(e, "message", str(e)))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def serve(serving_dir: str, model_name: str, host: str, port: int, grpc_port: int,
          poll_seconds: float = 2.0, echo=print) -> None:
    """Serves until interrupted."""
    watcher = VersionWatcher(serving_dir, poll_seconds)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(watcher, model_name), grpc_server)
    grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    grpc_server.start()
    http_server = make_server(host, port, RestApp(watcher, model_name), threaded=True)
    echo(f"serving {model_name} version {watcher.current().version} from {serving_dir}: "
         f"REST http://{host}:{port}/v1/models/{model_name}, gRPC {host}:{grpc_port}", flush=True)
    try:
        http_server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        http_server.server_close()
        grpc_server.stop(grace=1)
        watcher.stop()
