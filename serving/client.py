"""Clients of a TF Serving model server (or of `mtmoe serve`): REST and gRPC, per-task predictions.

The tasks are read off the `serving_default` output names (mtmoe.core.tasks.tasks_from_output_names), so
a client needs only the server's address and the model name.
"""
from typing import Dict, List, Optional, Sequence

import grpc
import requests

from mtmoe.core.errors import UserError
from mtmoe.core.feature_names import TEXT
from mtmoe.core.file_names import SERVED_MODEL_NAME
from mtmoe.core.tasks import prediction_rows, tasks_from_output_names



class ServingError(UserError):
    """The server refused a request; the message carries its status and error text."""


class RestClient:
    """TF Serving's REST API: `/v1/models/<name>[:predict|/metadata]`. One session for all calls:
    TF Serving keeps connections alive, and a session per call costs 0.2-0.5 ms even where the
    server closes them (`mtmoe serve`)."""

    def __init__(self, url: str, model_name: str = SERVED_MODEL_NAME, timeout: float = 30.0,
                 request_log=None):
        """`request_log` (serving.request_log.RequestLog): `predict` logs a sample of its texts
        and answers there, for callers of a TF Serving that logs nothing itself (its writer
        process imports the calling script again: keep the script's top level under a
        `__main__` guard)."""
        self.base = f"{url.rstrip('/')}/v1/models/{model_name}"
        self.timeout = timeout
        self.request_log = request_log
        self._session = requests.Session()

    def _call(self, method: str, path: str = "", **kwargs) -> dict:
        try:
            response = self._session.request(method, self.base + path, timeout=self.timeout,
                                             **kwargs)
        except requests.ConnectionError:
            raise ServingError(f"{self.base}: no model server answers there (is `mtmoe serve` or "
                               "TF Serving running, on that host and port?)") from None
        except requests.Timeout:
            raise ServingError(f"{self.base}: no answer within {self.timeout:g} s") from None
        except requests.RequestException as e:
            raise ServingError(f"{self.base}: {e}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.status_code != 200:
            raise ServingError(f"{self.base}{path}: HTTP {response.status_code}: "
                               f"{body.get('error', body)}")
        return body

    def status(self) -> dict:
        return self._call("GET")

    def metadata(self) -> dict:
        return self._call("GET", "/metadata")

    def predict_outputs(self, texts: Sequence[str], columnar: bool = False) -> Dict[str, list]:
        """`serving_default` outputs, one list per output, in either request format."""
        if columnar:
            return self._call("POST", ":predict", json={"inputs": {TEXT: list(texts)}})["outputs"]
        predictions = self._call("POST", ":predict", json={"instances": list(texts)})["predictions"]
        return {name: [row[name] for row in predictions] for name in predictions[0]}

    def predict(self, texts: Sequence[str], columnar: bool = False) -> List[dict]:
        outputs = self.predict_outputs(texts, columnar)
        _log(self.request_log, texts, outputs)
        return prediction_rows(texts, outputs, tasks_from_output_names(outputs))

    def close(self):
        self._session.close()


class GrpcClient:
    """TF Serving's gRPC PredictionService, through tensorflow-serving-api's stubs."""

    def __init__(self, target: str, model_name: str = SERVED_MODEL_NAME, timeout: float = 30.0,
                 request_log=None):
        """`request_log`: as RestClient's."""
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.request_log = request_log
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def predict_outputs(self, texts: Sequence[str], version: Optional[int] = None) -> Dict[str, list]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = "serving_default"
        if version is not None:
            request.model_spec.version.value = version
        request.inputs[TEXT].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise ServingError(f"{self.target}: no model server answers there (is `mtmoe "
                                   "serve` or TF Serving running, on that host and port?)") from None
            raise ServingError(f"{self.target}: {e.code().name}: {e.details()}") from None
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def predict(self, texts: Sequence[str]) -> List[dict]:
        outputs = self.predict_outputs(texts)
        _log(self.request_log, texts, outputs)
        return prediction_rows(texts, outputs, tasks_from_output_names(outputs))

    def close(self):
        self._channel.close()


def _log(request_log, texts, outputs) -> None:
    """A client's answered request to its request log; the server's version is not known here."""
    if request_log is not None:
        request_log.offer(list(texts), outputs, version=None)


def client_for(url: str, model_name: str = SERVED_MODEL_NAME):
    """`grpc://host:port` -> GrpcClient; `http(s)://...` -> RestClient."""
    if url.startswith("grpc://"):
        return GrpcClient(url[len("grpc://"):], model_name)
    if url.startswith(("http://", "https://")):
        return RestClient(url, model_name)
    raise UserError(f"{url}: expected http://host:port (REST) or grpc://host:port")
