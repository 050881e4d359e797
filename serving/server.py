"""A local endpoint that answers like TF Serving, for development and tests; production is TF Serving.

REST (tornado: HTTP/1.1, connections kept alive; a request is parsed and answered on the event loop,
or on a worker thread when its body is over 64 KiB, and waits for its batch without holding a
thread), the paths and JSON shapes of TF Serving's REST API:
  GET  /v1/models/<name>[/versions/<v>]            model status
  GET  /v1/models/<name>[/versions/<v>]/metadata   signature definitions
  POST /v1/models/<name>[/versions/<v>]:predict    {"instances": [...]} (row) or {"inputs": ...}
Every error is JSON, {"error": "..."}: a bad request 400, an unknown model or version 404, a body
over the byte limit 413, a request during shutdown 503, an unexpected failure 500 (its traceback
goes to the log).
gRPC: tensorflow.serving.PredictionService/Predict, from tensorflow-serving-api's service definition.

Concurrent requests are batched server-side as TF Serving's `batching.config` says (`Batcher`): a
request waits up to `batch_timeout_micros` for others to fill a batch of up to `max_batch_size`
texts; with 0 (the default) it runs at once, and requests that arrive while every batch thread is
busy share the next batch. The model's answer to a text does not depend on its batch, so batching
changes only speed. TensorFlow's op pools get the cores each batch thread has to itself (one thread
each with one batch thread per core; `size_op_pools`) unless TF_NUM_INTRAOP_THREADS or
TF_NUM_INTEROP_THREADS size them.

The highest integer version in the serving folder is served; a poll loads a newer one when it
appears, and the old one keeps serving until the new one has loaded. SIGTERM (or Ctrl-C) stops
taking connections and answers the requests in flight before exiting.
"""
import asyncio
import json
import logging
import os
import queue
import re
import signal
import threading
import time
from concurrent import futures
from typing import Dict, Iterator, List, Optional, Tuple

import grpc
import numpy as np
import orjson
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses
import tornado.httpserver
import tornado.httputil
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc
from tornado.httputil import responses as status_reasons

from mtmoe.core.errors import UserError
from mtmoe.core.feature_names import TEXT
from mtmoe.core.file_names import WARMUP_FILE
from mtmoe.serving.answers import json_body, prediction_body
from mtmoe.serving.deploy import (BatchingParameters, batch_threads, batching_parameters,
                                  op_threads)
from mtmoe.serving.predict import callable_signature

DEFAULT_SIGNATURE = "serving_default"
MAX_REQUEST_BYTES = 4 << 20   # gRPC's default message limit, for REST bodies too
MAX_INSTANCES = 1024          # texts per request
SHUTDOWN_GRACE_SECONDS = 30   # how long requests in flight may take to finish on SIGTERM
GRPC_THREADS = 32             # gRPC requests answered at once (each waits in the Batcher)
INLINE_BODY_BYTES = 64 << 10  # a larger REST body is parsed, and its answer written, on a worker
                              # thread, so that the event loop goes on reading other requests
MAX_DRAINED_BYTES = 1 << 30   # a larger body is cut off with tornado's bare 400, not read for a 413
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<verb>:predict|/metadata)?$")
log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the model cannot answer; its message goes back to the client."""


class LoadedVersion:
    """A loaded version, warmed up: like TF Serving, it replays the SavedModel's warmup requests
    (`assets.extra/tf_serving_warmup_requests`) before serving, so that its first request does not
    pay for building the graph (measured: about 550 ms, against 3 ms warm). A warmup request that
    fails fails the load."""

    def __init__(self, path: str, version: int):
        self.version = version
        self.model = tf.saved_model.load(path)
        self.signatures = {name: callable_signature(self.model, name)
                           for name in self.model.signatures}
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            meta_graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0]
        self.signature_defs = {name: meta_graph.signature_def[name]
                               for name in self.model.signatures}
        self.warmups_replayed = 0
        for request in warmup_requests(path):
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            run_signature(self, signature, {name: tf.constant(tf.make_ndarray(proto))
                                            for name, proto in request.inputs.items()})
            self.warmups_replayed += 1


def warmup_requests(model_dir: str) -> Iterator[predict_pb2.PredictRequest]:
    """The PredictRequests of a SavedModel's warmup file, in order (none if it has no file)."""
    path = os.path.join(model_dir, WARMUP_FILE)
    if not os.path.exists(path):
        return
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        yield prediction_log_pb2.PredictionLog.FromString(record).predict_log.request


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
        path = os.path.join(self.serving_dir, str(versions[-1]))
        try:
            loaded = LoadedVersion(path, versions[-1])
        except Exception as e:  # a version still being copied, or a broken one: keep serving
            if self._current is None:  # nothing to keep serving
                raise UserError(f"{path}: the version did not load: {e}") from e
            log.warning("version %s did not load (%s); still serving the previous one", versions[-1], e)
            return
        self._current = loaded
        log.warning("serving version %s (%d warmup requests replayed)", loaded.version,
                    loaded.warmups_replayed)

    def _poll(self):
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def current(self) -> LoadedVersion:
        return self._current

    def stop(self):
        self._stop.set()
        self._thread.join()


def _as_input(name: str, values, spec: tf.TensorSpec):
    """A request's values for one input, checked: strings as a numpy array of bytes (the batcher
    joins arrays; the signature converts them once per batch), other types as a tensor."""
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
        return np.array([v if isinstance(v, bytes) else v.encode("utf-8") for v in values],
                        dtype=object)
    try:
        return tf.constant(np.asarray(values), dtype=spec.dtype)
    except (ValueError, TypeError) as e:
        raise RequestError(f"input '{name}': {e}") from None


def _signature(loaded: LoadedVersion, name: str):
    if name not in loaded.signatures:
        raise RequestError(f"unknown signature '{name}'; the model has "
                           f"{', '.join(sorted(loaded.signatures))}")
    return loaded.signatures[name]


def input_names(loaded: LoadedVersion, signature: str):
    return sorted(_signature(loaded, signature).structured_input_signature[1])


def request_inputs(loaded: LoadedVersion, signature: str, inputs: Dict[str, list],
                   max_instances: int = MAX_INSTANCES) -> Dict[str, object]:
    """The signature's inputs from a request's values, checked: a RequestError names what is
    wrong."""
    specs = _signature(loaded, signature).structured_input_signature[1]
    if set(inputs) != set(specs):
        raise RequestError(f"signature '{signature}' takes input(s) {', '.join(sorted(specs))}; "
                           f"got {', '.join(sorted(inputs)) or 'none'}")
    arrays = {name: _as_input(name, inputs[name], spec) for name, spec in specs.items()}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) > 1:
        raise RequestError("inputs have different batch sizes")
    if max(sizes) > max_instances:
        raise RequestError(f"{max(sizes)} instances; a request may hold at most {max_instances}")
    return arrays


def run_signature(loaded: LoadedVersion, signature: str, inputs) -> Dict[str, np.ndarray]:
    return {name: value.numpy()
            for name, value in _signature(loaded, signature)(**inputs).items()}


_STOP = object()  # tells a batch thread to end


class _Pending:
    """One request waiting in the batcher."""

    def __init__(self, loaded, signature, inputs, loop):
        self.key = (loaded.version, signature)
        self.loaded, self.signature, self.inputs = loaded, signature, inputs
        self.rows = len(next(iter(inputs.values())))
        self.loop = loop
        self.future = loop.create_future() if loop else futures.Future()


class Batcher:
    """Server-side batching, as TF Serving's BatchingParameters set it: each of `num_batch_threads`
    threads (one per core without it) takes the oldest request and adds later ones for the same
    version and signature until the batch holds `max_batch_size` rows or `batch_timeout_micros`
    have passed, runs the batch once and hands each request its rows. A request larger than a batch
    runs alone."""

    def __init__(self, parameters=None):
        parameters = parameters or batching_parameters()
        self.max_rows = parameters.max_batch_size.value
        self.timeout = parameters.batch_timeout_micros.value / 1e6
        self.queue: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._work, daemon=True)
                        for _ in range(batch_threads(parameters))]
        for thread in self.threads:
            thread.start()

    def submit(self, loaded, signature: str, inputs, loop=None):
        """Queues a request; its future holds the request's rows of each output (or the error).
        Given the caller's event loop, the future is that loop's, and a batch settles all of its
        requests from the loop in one callback (one wake-up of the loop a batch, not one a
        request)."""
        pending = _Pending(loaded, signature, inputs, loop)
        self.queue.put(pending)
        return pending.future

    def run(self, loaded, signature: str, inputs) -> Dict[str, np.ndarray]:
        return self.submit(loaded, signature, inputs).result()

    def stop(self):
        """Ends the batch threads once the requests queued before have run."""
        for _ in self.threads:
            self.queue.put(_STOP)
        for thread in self.threads:
            thread.join()

    def _work(self):
        carried = None  # a request that did not fit the last batch: it opens the next one
        while True:
            first = carried if carried is not None else self.queue.get()
            carried = None
            if first is _STOP:
                return
            batch, rows, deadline = [first], first.rows, time.monotonic() + self.timeout
            while rows < self.max_rows:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP or item.key != first.key or rows + item.rows > self.max_rows:
                    carried = item
                    break
                batch.append(item)
                rows += item.rows
            self._run(batch)

    @staticmethod
    def _run(batch: List[_Pending]):
        first = batch[0]
        try:
            inputs = first.inputs if len(batch) == 1 else {
                name: np.concatenate([p.inputs[name] for p in batch]) for name in first.inputs}
            outputs = run_signature(first.loaded, first.signature, inputs)
            results, start = [], 0
            for pending in batch:
                end = start + pending.rows
                results.append({name: value[start:end] for name, value in outputs.items()})
                start = end
        except Exception as e:  # every request of the batch gets the error
            results = [e] * len(batch)
        on_loops = {}
        for pending, result in zip(batch, results):
            if pending.loop is None:
                _settle(pending.future, result)
            else:
                on_loops.setdefault(pending.loop, []).append((pending.future, result))
        for loop, settled in on_loops.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # the loop has closed (a shutdown past its grace): none waits
                log.warning("%d answers dropped: the server stopped first", len(settled))


def _settle(future, result) -> None:
    if not future.cancelled():
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


def _settle_all(settled) -> None:
    for future, result in settled:
        _settle(future, result)


def read_batching_parameters(path: Optional[str]):
    """The BatchingParameters text proto at `path` (the pipeline writes one beside the serving
    folder), or the defaults that file holds."""
    if not path:
        return batching_parameters()
    with open(path) as f:
        try:
            return text_format.Parse(f.read(), BatchingParameters())
        except text_format.ParseError as e:
            raise UserError(f"{path}: not a BatchingParameters text proto: {e}") from None


def size_op_pools(parameters) -> Dict[str, str]:
    """Sizes TensorFlow's intra-op and inter-op pools for a server with these batching parameters
    (`op_threads`), except a pool that TF_NUM_INTRAOP_THREADS or TF_NUM_INTEROP_THREADS sizes.
    Must run before TensorFlow runs anything in this process. Returns each pool's size."""
    setters = {"intra-op": ("TF_NUM_INTRAOP_THREADS",
                            tf.config.threading.set_intra_op_parallelism_threads),
               "inter-op": ("TF_NUM_INTEROP_THREADS",
                            tf.config.threading.set_inter_op_parallelism_threads)}
    threads, sizes = op_threads(parameters), {}
    for pool, (variable, set_size) in setters.items():
        if os.environ.get(variable):
            sizes[pool] = os.environ[variable]
        else:
            set_size(threads)
            sizes[pool] = str(threads)
    return sizes


def load_request(body: bytes) -> dict:
    try:
        request = orjson.loads(body or b"")
    except orjson.JSONDecodeError as e:
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
    """The REST API apart from HTTP: `await respond(method, path, body)` gives the status and the
    JSON body. Counts the requests in flight (the HTTP handler opens and closes each), so that a
    shutdown can wait for them."""

    def __init__(self, watcher: VersionWatcher, model_name: str, batcher: Batcher,
                 max_request_bytes: int = MAX_REQUEST_BYTES, max_instances: int = MAX_INSTANCES,
                 request_log=None):
        self.watcher, self.model_name, self.batcher = watcher, model_name, batcher
        self.max_request_bytes, self.max_instances = max_request_bytes, max_instances
        self.request_log = request_log  # serving.request_log.RequestLog, or None
        self.stopping = False  # set on shutdown: new requests get 503
        self._in_flight = 0
        self._idle = threading.Condition()

    def request_started(self):
        with self._idle:
            self._in_flight += 1

    def request_done(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in flight; False if some still are after `timeout` s."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    async def respond(self, method: str, path: str, body: bytes) -> Tuple[int, bytes]:
        """(HTTP status, JSON body) of one request whose body is within the byte limit."""
        try:
            return await self._route(method, path, body)
        except Exception:  # a bug of ours, still answered in JSON; the traceback goes to the log
            log.exception("unexpected error answering %s %s", method, path)
            return 500, json_body({"error": "internal error; see the server log"})

    def too_large(self) -> Tuple[int, bytes]:
        return 413, json_body({"error": f"the request body is over {self.max_request_bytes} bytes; "
                                    "send fewer or shorter texts per request"})

    async def _route(self, method: str, path: str, body: bytes) -> Tuple[int, bytes]:
        match = _PATH.match(path)
        if not match:
            return 404, json_body({"error": f"unknown path {path}"})
        loaded = self.watcher.current()
        version = match["version"]
        if match["name"] != self.model_name or (version and int(version) != loaded.version):
            return 404, json_body({"error": f"Servable not found for request: {match['name']}"
                                        + (f" version {version}" if version else "")})
        if match["verb"] == ":predict":
            if method != "POST":
                return 405, json_body({"error": "predict needs POST"})
            return await self._predict(loaded, body)
        if match["verb"] == "/metadata":
            return 200, json_body(self._metadata(loaded))
        return 200, json_body({"model_version_status": [{
            "version": str(loaded.version), "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]})

    def _metadata(self, loaded: LoadedVersion) -> dict:
        return {"model_spec": {"name": self.model_name, "signature_name": "",
                               "version": str(loaded.version)},
                "metadata": {"signature_def": {"signature_def": {
                    name: json_format.MessageToDict(definition, preserving_proto_field_name=True)
                    for name, definition in loaded.signature_defs.items()}}}}

    async def _predict(self, loaded: LoadedVersion, body: bytes) -> Tuple[int, bytes]:
        offload = len(body) > INLINE_BODY_BYTES
        try:
            signature, inputs, row_format = await _on_worker_if(offload, self._parse, loaded, body)
            outputs = await self.batcher.submit(loaded, signature, inputs,
                                                asyncio.get_running_loop())
        except RequestError as e:
            return 400, json_body({"error": str(e)})
        except tf.errors.OpError as e:
            return 400, json_body({"error": e.message})
        body = await _on_worker_if(offload, prediction_body, outputs, row_format)
        _log_request(self.request_log, signature, inputs, body, loaded)
        return 200, body

    def _parse(self, loaded: LoadedVersion, body: bytes):
        request = load_request(body)
        signature = request.get("signature_name", DEFAULT_SIGNATURE)
        inputs, row_format = parse_predict_request(request, input_names(loaded, signature))
        return signature, request_inputs(loaded, signature, inputs, self.max_instances), row_format


def _log_request(request_log, signature: str, inputs, answer, loaded: LoadedVersion) -> None:
    """Hands an answered text request to the request log (it samples and writes elsewhere);
    `answer`: the outputs, or the REST body that answered them (nothing left to encode)."""
    if request_log is not None and signature == DEFAULT_SIGNATURE:
        request_log.offer([t.decode("utf-8") for t in inputs[TEXT]], answer, loaded.version)


async def _on_worker_if(offload: bool, function, *args):
    """function(*args) on a worker thread when `offload`, else here on the event loop (for a small
    body, the hand-over to a thread costs more than the work)."""
    if offload:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)
    return function(*args)


class _RestConnections(tornado.httputil.HTTPServerConnectionDelegate):
    """tornado's HTTP server (HTTP/1.1 with keep-alive, no thread per connection) hands each
    request to a _RestRequest: tornado's message interface, without its web framework's
    per-request work (measured on a bare echo: 0.19-0.21 ms of server CPU a request against
    0.29)."""

    def __init__(self, app: "RestApp"):
        self.app = app
        self.answering = set()  # the answers' tasks, held until done (the loop keeps weak refs)

    def start_request(self, server_conn, request_conn) -> "_RestRequest":
        return _RestRequest(self, request_conn)


class _RestRequest(tornado.httputil.HTTPMessageDelegate):
    """One HTTP request to the RestApp. The body is kept up to the byte limit as it streams in;
    past it, the rest is read and dropped, then 413 (a client still sending would not see an
    early answer). Every reply is JSON."""

    def __init__(self, connections: _RestConnections, connection):
        self.connections, self.app, self.connection = connections, connections.app, connection
        self.chunks: List[bytes] = []
        self.size = 0
        self.counted = False

    def headers_received(self, start_line, headers):
        self.method, self.path = start_line.method, start_line.path.partition("?")[0]
        self.app.request_started()
        self.counted = True

    def data_received(self, chunk: bytes):
        self.size += len(chunk)
        if self.size <= self.app.max_request_bytes:
            self.chunks.append(chunk)

    def finish(self):
        task = asyncio.ensure_future(self._answer())
        self.connections.answering.add(task)
        task.add_done_callback(self.connections.answering.discard)

    def on_connection_close(self):
        self._uncount()

    async def _answer(self):
        close = self.app.stopping
        try:
            if close:
                status, body = 503, json_body({"error": "the server is shutting down"})
            elif self.method not in ("GET", "POST"):
                status, body = 405, json_body({"error": f"{self.method} is not part of the API; use "
                                                    "GET or POST"})
            elif self.size > self.app.max_request_bytes:
                status, body = self.app.too_large()
            else:
                status, body = await self.app.respond(self.method, self.path,
                                                      b"".join(self.chunks))
            headers = tornado.httputil.HTTPHeaders({"Content-Type": "application/json",
                                                    "Content-Length": str(len(body))})
            if close:
                headers["Connection"] = "close"
            self.connection.write_headers(tornado.httputil.ResponseStartLine(
                "HTTP/1.1", status, status_reasons.get(status, "Unknown")), headers,
                None if self.method == "HEAD" else body)  # a HEAD answer has headers only
            self.connection.finish()
        finally:  # answered, or the connection is gone: either way no longer in flight
            self._uncount()

    def _uncount(self):
        if self.counted:
            self.counted = False
            self.app.request_done()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """gRPC Predict on the served version."""

    def __init__(self, watcher: VersionWatcher, model_name: str, batcher: Batcher,
                 max_instances: int = MAX_INSTANCES, request_log=None):
        self.watcher, self.model_name, self.batcher = watcher, model_name, batcher
        self.max_instances = max_instances
        self.request_log = request_log

    def Predict(self, request, context):
        loaded = self.watcher.current()
        spec = request.model_spec
        if spec.name != self.model_name or (spec.HasField("version") and
                                            spec.version.value != loaded.version):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")
        signature = spec.signature_name or DEFAULT_SIGNATURE
        try:
            inputs = request_inputs(loaded, signature,
                                    {name: tf.make_ndarray(proto).tolist()
                                     for name, proto in request.inputs.items()}, self.max_instances)
            outputs = self.batcher.run(loaded, signature, inputs)
        except (RequestError, tf.errors.OpError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(e, "message", str(e)))
        except Exception:
            log.exception("unexpected error answering a gRPC Predict")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        _log_request(self.request_log, signature, inputs, outputs, loaded)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def serve(serving_dir: str, model_name: str, host: str, port: int, grpc_port: int,
          poll_seconds: float = 2.0, batching_config: Optional[str] = None,
          max_request_bytes: Optional[int] = None, max_instances: Optional[int] = None,
          echo=print, request_log=None) -> None:
    """Serves until SIGTERM or Ctrl-C, then answers the requests in flight and returns;
    `request_log` (serving.request_log.RequestLog) gets a sample of the answered texts."""
    max_request_bytes = max_request_bytes or MAX_REQUEST_BYTES
    max_instances = max_instances or MAX_INSTANCES
    parameters = read_batching_parameters(batching_config)
    pools = size_op_pools(parameters)
    watcher = VersionWatcher(serving_dir, poll_seconds)
    batcher = Batcher(parameters)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_THREADS), options=[
        ("grpc.max_receive_message_length", max_request_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(watcher, model_name, batcher, max_instances, request_log), grpc_server)
    grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    grpc_server.start()
    app = RestApp(watcher, model_name, batcher, max_request_bytes, max_instances, request_log)

    def ready():
        echo(f"serving {model_name} version {watcher.current().version} from {serving_dir}: "
             f"REST http://{host}:{port}/v1/models/{model_name}, gRPC {host}:{grpc_port}; batches "
             f"of up to {parameters.max_batch_size.value} texts, waiting up to "
             f"{parameters.batch_timeout_micros.value} us, on {len(batcher.threads)} batch "
             f"threads; TensorFlow op pools of {pools['intra-op']} intra-op and "
             f"{pools['inter-op']} inter-op threads", flush=True)
        if request_log is not None and request_log.paused is None:
            echo(f"logging {request_log.sample:g} of the answered texts to {request_log.folder}",
                 flush=True)

    def stopping():
        echo("stopping: answering the requests in flight", flush=True)
        grpc_server.stop(grace=SHUTDOWN_GRACE_SECONDS)  # gRPC drains meanwhile

    try:
        asyncio.run(_serve_rest(app, host, port, ready, stopping))
    finally:
        grpc_server.stop(grace=SHUTDOWN_GRACE_SECONDS).wait()
        batcher.stop()
        watcher.stop()
        if request_log is not None:
            request_log.close()


async def _serve_rest(app: RestApp, host: str, port: int, ready, stopping) -> None:
    """REST until SIGTERM or SIGINT; then no new connections, 503 for new requests on open ones,
    and the requests in flight answered (up to SHUTDOWN_GRACE_SECONDS)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    http_server = tornado.httpserver.HTTPServer(_RestConnections(app),
                                                max_body_size=MAX_DRAINED_BYTES)
    http_server.listen(port, host)
    ready()
    await stop.wait()
    app.stopping = True
    http_server.stop()
    stopping()
    if not await loop.run_in_executor(None, app.wait_idle, SHUTDOWN_GRACE_SECONDS):
        log.warning("requests still in flight after %s s; stopping anyway", SHUTDOWN_GRACE_SECONDS)
