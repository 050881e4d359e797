"""`mtmoe serve` in a subprocess, used through the REST and gRPC clients as TF Serving would be."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from mtmoe.core.errors import UserError
from mtmoe.core.file_names import WARMUP_FILE
from mtmoe.serving.client import GrpcClient, RestClient
from mtmoe.serving.deploy import batching_parameters
from mtmoe.serving.predict import Predictor
from mtmoe.serving.server import INLINE_BODY_BYTES, VersionWatcher

pytestmark = pytest.mark.slow

TEXTS = ["transfer $50 to my savings tomorrow", "I LOST MY VISA CARD!!", "",
         "zzqx frobnicate " * 100, "перевести деньги на сбережения", "我的卡丢了"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(serving_dir, *options, env=None):
    """`mtmoe serve` on free ports, once it answers: (process, REST url, gRPC address)."""
    rest, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mtmoe"), "serve", "--serving-dir",
         str(serving_dir), "--port", str(rest), "--grpc-port", str(grpc_port), *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, **(env or {})))
    url = f"http://127.0.0.1:{rest}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v1/models/mtmoe", timeout=2).status_code == 200:
                return process, url, f"127.0.0.1:{grpc_port}"
        except requests.ConnectionError:
            assert process.poll() is None, process.stdout.read()[-3000:]
            time.sleep(1)
    process.kill()
    pytest.fail("mtmoe serve did not answer within 180 s")


def _batching_file(folder, **parameters):
    """A batching.config in `folder` with these BatchingParameters, for `--batching-config`."""
    path = folder / "batching.config"
    path.write_text(text_format.MessageToString(batching_parameters(**parameters)))
    return path


def _serving_copy(tiny_export, folder):
    """A copy of the tiny exported version in its own serving folder."""
    version = tiny_export["version"]
    serving_dir = folder / "serving_model"
    shutil.copytree(version, serving_dir / os.path.basename(version))
    return serving_dir


BATCHING_WAIT_MICROS = 50_000  # the shared server's: requests sent together meet in a batch


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    serving_dir = _serving_copy(tiny_export, folder)
    batching = _batching_file(folder, batch_timeout_micros=BATCHING_WAIT_MICROS)
    process, url, grpc_address = _start(serving_dir, "--poll-seconds", "0.5",
                                        "--batching-config", batching,
                                        "--log-requests", folder / "requests", "--log-mask-digits")
    yield {"url": url, "grpc": grpc_address, "dir": serving_dir, "requests": folder / "requests",
           "version": int(os.path.basename(tiny_export["version"])), "process": process}
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def in_process(server):
    return Predictor(str(server["dir"]))


def _assert_same_outputs(expected, actual):
    assert set(actual) == set(expected)
    for name, value in expected.items():
        got = np.asarray(actual[name])
        if value.dtype == object:
            assert [[x.decode() if isinstance(x, bytes) else x for x in np.ravel(got)]] == \
                [[x.decode() for x in np.ravel(value)]], name
        else:
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_rest_and_grpc_answer_what_the_saved_model_answers_in_process(server, in_process):
    expected = in_process.outputs(TEXTS)
    rest = RestClient(server["url"])
    _assert_same_outputs(expected, rest.predict_outputs(TEXTS))
    _assert_same_outputs(expected, rest.predict_outputs(TEXTS, columnar=True))
    grpc_client = GrpcClient(server["grpc"])
    _assert_same_outputs(expected, grpc_client.predict_outputs(TEXTS))
    assert rest.predict(TEXTS) == grpc_client.predict(TEXTS) == in_process.predict(TEXTS)
    assert {type(row["intent"]["in_scope"]) for row in rest.predict(TEXTS)} == {bool}
    grpc_client.close()


def test_a_large_body_parsed_off_the_event_loop_gets_the_same_answers(server, in_process):
    texts = TEXTS + ["check my balance and move it to savings " * 8] * 250
    assert len(json.dumps({"instances": texts})) > INLINE_BODY_BYTES
    rest = RestClient(server["url"])
    _assert_same_outputs(in_process.outputs(texts), rest.predict_outputs(texts))


@pytest.mark.parametrize("body, fragment", [
    ("{not json", "malformed JSON"),
    (json.dumps({"signature_name": "serving_default"}), "'instances'"),
    (json.dumps({"instances": ["fine", 7]}), "instance 1 is 7; expected a string"),
    (json.dumps({"instances": []}), "empty batch"),
    (json.dumps({"instances": "text"}), "'instances' must be a list"),
    (json.dumps({"instances": ["a"], "signature_name": "nope"}), "unknown signature 'nope'"),
    (json.dumps({"instances": [["nested"]]}), "expected a string"),
    (json.dumps({"inputs": {"text": ["a"], "extra": ["b"]}}), "takes input(s) text; got extra, text"),
    ("[" * 5000 + "]" * 5000, "depth limit exceeded"),
    (json.dumps({"instances": ["a"] * 1025}), "1025 instances; a request may hold at most 1024"),
    (json.dumps({"instances": ["a text"] * 9000}), "9000 instances"),  # parsed on a worker thread
    (b'{"instances": ["caf\xe9"]}', "malformed JSON"),  # Latin-1, not UTF-8
])
def test_bad_requests_get_400_and_the_server_keeps_serving(server, body, fragment):
    response = requests.post(f"{server['url']}/v1/models/mtmoe:predict", data=body, timeout=30)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert fragment in response.json()["error"]
    assert RestClient(server["url"]).predict(["check my balance"])[0]["intent"]["label"]


def test_a_body_over_the_byte_limit_gets_a_json_413(server):
    body = json.dumps({"instances": ["x" * (4 << 20)]}).encode()
    url = f"{server['url']}/v1/models/mtmoe:predict"
    sized = requests.post(url, data=body, timeout=60)
    chunked = requests.post(url, data=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                            timeout=60)  # no Content-Length: the limit counts what arrives
    for response in (sized, chunked):
        assert response.status_code == 413
        assert "over 4194304 bytes" in response.json()["error"]


def test_concurrent_requests_share_batches_and_get_what_each_gets_alone(server, in_process):
    """REST and gRPC requests sent together (the server waits 50 ms for a batch to fill) get the
    outputs each text gets alone."""
    rest, grpc_client = RestClient(server["url"]), GrpcClient(server["grpc"])
    clients = [grpc_client.predict_outputs if i % 2 else rest.predict_outputs
               for i in range(len(TEXTS))]
    start = threading.Barrier(len(TEXTS))

    def ask(i):
        start.wait()
        return clients[i]([TEXTS[i]])

    try:
        with ThreadPoolExecutor(len(TEXTS)) as pool:
            answers = list(pool.map(ask, range(len(TEXTS))))
    finally:
        grpc_client.close()
    for text, answer in zip(TEXTS, answers):
        _assert_same_outputs(in_process.outputs([text]), answer)


def test_a_method_the_api_lacks_gets_a_json_error(server):
    response = requests.options(f"{server['url']}/v1/models/mtmoe", timeout=10)
    assert response.status_code == 405 and "OPTIONS" in response.json()["error"]
    head = requests.head(f"{server['url']}/v1/models/mtmoe", timeout=10)  # headers, no body
    assert head.status_code == 405 and head.headers["Content-Type"] == "application/json"


def test_a_connection_serves_one_request_after_another(server):
    """HTTP/1.1 keep-alive, as TF Serving: a client does not reconnect for each request."""
    connection = http.client.HTTPConnection(server["url"][len("http://"):], timeout=30)
    try:
        sockets = []
        for text in TEXTS[:3]:
            connection.request("POST", "/v1/models/mtmoe:predict",
                               json.dumps({"instances": [text]}))
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["predictions"]
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert sockets[0] is not None and sockets == [sockets[0]] * 3


def test_sigterm_answers_the_requests_in_flight_then_exits(tiny_export, tmp_path):
    """The batcher holds a request for 3 s (waiting for others to join it); SIGTERM arrives
    meanwhile: the request is still answered, a new request on a kept-alive connection gets 503,
    and the server exits 0. Its first line reports the batching settings and the sizes of
    TensorFlow's op pools: the cores each batch thread has, or what TensorFlow's variable says."""
    batching = _batching_file(tmp_path, batch_timeout_micros=3_000_000, num_batch_threads=1)
    process, url, _ = _start(_serving_copy(tiny_export, tmp_path), "--batching-config", batching,
                             env={"TF_NUM_INTEROP_THREADS": "3"})
    kept = http.client.HTTPConnection(url[len("http://"):], timeout=30)  # one request, then idle
    kept.request("GET", "/v1/models/mtmoe")
    assert kept.getresponse().read()
    answered = {}
    asking = threading.Thread(target=lambda: answered.update(response=requests.post(
        f"{url}/v1/models/mtmoe:predict", json={"instances": ["check my balance"]}, timeout=60)))
    asking.start()
    time.sleep(1)  # the request is waiting in the batcher
    process.send_signal(signal.SIGTERM)
    printed = []
    for line in process.stdout:  # up to the line that says the server is stopping
        printed.append(line)
        if line.startswith("stopping:"):
            break
    kept.request("GET", "/v1/models/mtmoe")
    refused = kept.getresponse()
    assert refused.status == 503 and "shutting down" in json.loads(refused.read())["error"]
    kept.close()
    asking.join(timeout=60)
    returncode = process.wait(timeout=60)
    output = "".join(printed) + process.stdout.read()
    assert returncode == 0, output[-3000:]
    assert answered["response"].status_code == 200
    assert answered["response"].json()["predictions"][0]["tokens"][:3] == ["check", "my", "balance"]
    assert "batches of up to 32 texts, waiting up to 3000000 us, on 1 batch threads" in output
    assert (f"op pools of {len(os.sched_getaffinity(0))} intra-op and 3 inter-op threads"
            in output)
    assert "stopping: answering the requests in flight" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v1/models/mtmoe", timeout=5)


def test_status_metadata_and_unknown_model(server):
    rest = RestClient(server["url"])
    status, = rest.status()["model_version_status"]
    assert status["state"] == "AVAILABLE" and int(status["version"]) >= server["version"]
    signatures = rest.metadata()["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) >= {"serving_default", "serving_examples"}
    assert list(signatures["serving_default"]["inputs"]) == ["text"]
    assert requests.get(f"{server['url']}/v1/models/other", timeout=10).status_code == 404


def test_predict_command_asks_the_server(server, cli):
    result = cli("predict", "--server", server["url"], *TEXTS[:2])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == TEXTS[:2]
    result = cli("predict", "--server", f"grpc://{server['grpc']}", TEXTS[0])
    assert result.returncode == 0 and json.loads(result.stdout)["slots"]["tokens"][0] == "transfer"


def _write_failing_warmup(version_dir):
    """A warmup request for a signature the model lacks, as a broken export would hold."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name="missing"))
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["hello"]))
    with tf.io.TFRecordWriter(str(version_dir / WARMUP_FILE)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
            request=request)).SerializeToString())


def test_a_version_replays_its_warmup_requests_and_one_that_fails_them_is_not_served(
        tiny_export, tmp_path):
    serving_dir = _serving_copy(tiny_export, tmp_path)
    records = sum(1 for _ in tf.data.TFRecordDataset(f"{tiny_export['version']}/{WARMUP_FILE}"))
    watcher = VersionWatcher(str(serving_dir), poll_seconds=3600)
    try:
        assert watcher.current().warmups_replayed == records > 0
        shutil.copytree(serving_dir / "1", serving_dir / "2")
        _write_failing_warmup(serving_dir / "2")
        watcher.refresh()
        assert watcher.current().version == 1
    finally:
        watcher.stop()
    shutil.rmtree(serving_dir / "1")
    with pytest.raises(UserError, match=r"2: the version did not load: .*missing"):
        VersionWatcher(str(serving_dir))


def test_a_new_version_is_served_without_a_restart(server):
    """The new version is a copy of the served one, so the other tests here pass whichever serves."""
    newer = server["version"] + 1
    staging = server["dir"].parent / "staging"
    shutil.copytree(server["dir"] / str(server["version"]), staging)
    os.rename(staging, server["dir"] / str(newer))  # appears whole, as a push does
    rest = RestClient(server["url"])
    deadline = time.monotonic() + 60
    while int(rest.status()["model_version_status"][0]["version"]) != newer:
        assert time.monotonic() < deadline, "the new version was not picked up within 60 s"
        time.sleep(0.5)
    assert server["process"].poll() is None
    grpc_client = GrpcClient(server["grpc"])
    assert grpc_client.predict_outputs(TEXTS[:1], version=newer)["intent_label"].shape == (1,)
    grpc_client.close()


def _logged(folder, marker, count, timeout=10.0):
    """The logged rows whose text holds `marker`, once there are `count` (the log writes behind)."""
    from mtmoe.serving.request_log import request_files

    deadline = time.monotonic() + timeout
    while True:
        rows = [json.loads(line) for path in request_files(folder) for line in open(path)
                if marker in line]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_every_answered_text_is_logged_once_with_its_answer_and_its_digits_masked(server, in_process):
    """REST and gRPC texts alike, each with the answer it got, the serving version, and # for its
    digits (--log-mask-digits); the folder and its files are the owner's alone."""
    texts = [f"logme rest {i} pay 12 dollars" for i in range(3)]
    rest = RestClient(server["url"])
    serving = int(rest.status()["model_version_status"][0]["version"])  # other tests push versions
    rest.predict(texts)
    grpc_client = GrpcClient(server["grpc"])
    grpc_client.predict(["logme grpc 7 where is my card"])
    grpc_client.close()
    rows = _logged(server["requests"], "logme", 4)
    assert sorted(row["text"] for row in rows) == sorted(
        [f"logme rest # pay ## dollars" for _ in range(3)] + ["logme grpc # where is my card"])
    expected = {row["text"]: row for row in in_process.predict(texts[:1])}
    logged = next(row for row in rows if row["text"].startswith("logme rest"))
    want = expected[texts[0]]["intent"]
    assert logged["intent"] == {**want, "score": pytest.approx(want["score"], rel=1e-5)}
    assert "in_scope" in logged["intent"]
    assert logged["model_version"] == serving and logged["time"].endswith("Z")
    assert all(not any(c.isdigit() for c in token) for row in rows
               for token in row["slots"]["tokens"])  # tokens masked too
    assert oct(os.stat(server["requests"]).st_mode & 0o777) == "0o700"
    assert {oct(os.stat(server["requests"] / name).st_mode & 0o777)
            for name in os.listdir(server["requests"])} == {"0o600"}


def test_a_request_log_folder_that_cannot_be_written_leaves_the_server_answering(tiny_export, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log folder should be")
    process, url, _ = _start(_serving_copy(tiny_export, tmp_path), "--log-requests", blocked / "logs")
    try:
        assert RestClient(url).predict(["pay bob"])[0]["text"] == "pay bob"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    warnings = [line for line in output.splitlines() if "request logging is off" in line]
    assert len(warnings) == 1 and str(blocked / "logs") in warnings[0]


def test_the_python_clients_log_what_they_asked_and_got(server, tmp_path):
    """For callers of a TF Serving that logs nothing: the client's own request log."""
    from mtmoe.serving.request_log import RequestLog

    log = RequestLog(str(tmp_path / "client-log"))
    answers = RestClient(server["url"], request_log=log).predict(["client pay bob"])
    grpc_client = GrpcClient(server["grpc"], request_log=log)
    grpc_client.predict(["client where is my card"])
    grpc_client.close()
    log.close()
    rows = _logged(tmp_path / "client-log", "client", 2)
    assert [row["text"] for row in rows] == ["client pay bob", "client where is my card"]
    assert rows[0]["intent"] == answers[0]["intent"] and rows[0]["model_version"] is None
