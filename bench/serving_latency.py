"""Serving latency of a pushed model: in process (the SavedModel's `serving_default`) and through the
local endpoint (`mtmoe serve`, REST and gRPC), p50 / p99 per request at batch 1 and 32, and
throughput; the server's first request once it answers; where batch 1 spends its time in process
(per signature); then under load: 1, 8 and 32 concurrent clients sending one text per request,
in process (each client calling the model; and through the server's batching code, no HTTP), over
REST and over gRPC; and over REST once more from a server left with TensorFlow's own op pools
(every core each: TF_NUM_INTRAOP_THREADS=0, TF_NUM_INTEROP_THREADS=0), to show what the server's
pool sizing is worth; and a server logging every request (`--log-requests DIR --log-sample 1.0`)
beside one that does not, in paired rounds: batch-1 p50 and 8-client throughput, and the lines
logged against the requests answered.

    python bench/serving_latency.py --model mtmoe_work/serving_model [--requests 200]
                                    [--load-requests 800] [--load-rounds 3]

Texts are the model's own warmup requests (eval texts), cycled to fill a batch. Under load, each of
the clients sends its share of `--load-requests` one after another (loopback only); the server
batches concurrent requests as its batching.config says. Each path runs 1, 8 and 32 clients in
turn, `--load-rounds` times: a load row holds the medians over rounds, and `vs_one_client` the
median of its throughput over one client's in the same round (this machine's speed drifts by tens
of percent within minutes; a ratio within one round is steadier than one across rounds). Writes
bench/results/serving_latency.json with the machine, the versions and the command.
"""
import argparse
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import mtmoe  # noqa: F401  sets the Keras environment before TensorFlow loads
import numpy as np
import orjson
import requests
import tensorflow as tf

from machine import write_result
from mtmoe.core.feature_names import TEXT
from mtmoe.core.formats import to_tf_example
from mtmoe.serving.client import GrpcClient
from mtmoe.serving.predict import Predictor, resolve_model_dir
from mtmoe.serving.server import (DEFAULT_SIGNATURE, Batcher, LoadedVersion, request_inputs,
                                  warmup_requests)


DEFAULT_POOLS_REST = "REST (mtmoe serve, TensorFlow's default op pools)"
LOAD_CLIENTS = (1, 8, 32)


def warmup_texts(model_dir):
    texts = [t.decode() for request in warmup_requests(model_dir)
             for t in tf.make_ndarray(request.inputs[TEXT])]
    return list(dict.fromkeys(texts))


def timed(call, batches, warmup=10):
    for batch in batches[:warmup]:
        call(batch)
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        call(batch)
        seconds.append(time.perf_counter() - start)
    seconds = np.array(seconds)
    return {"p50_ms": round(1000 * float(np.percentile(seconds, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(seconds, 99)), 2),
            "texts_per_s": round(sum(len(b) for b in batches) / float(seconds.sum()), 1)}


def under_load(call, texts, clients: int, total: int):
    """`clients` threads, each sending its share of `total` one-text requests in turn: p50 / p99
    per request and requests per second over the whole run."""
    per_client = total // clients

    def client(offset):
        seconds = []
        for i in range(per_client):
            start = time.perf_counter()
            call([texts[(offset + i) % len(texts)]])
            seconds.append(time.perf_counter() - start)
        return seconds

    for text in texts[:10]:  # warm
        call([text])
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = np.concatenate(list(pool.map(client, range(0, clients * 7, 7))))
    wall = time.perf_counter() - started
    return {"p50_ms": round(1000 * float(np.percentile(seconds, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(seconds, 99)), 2),
            "requests_per_s": round(len(seconds) / wall, 1)}


def load_rows(path: str, call, texts, total: int, rounds: int):
    """1, 8 and 32 clients, `rounds` times in turn (see the module docstring)."""
    runs = {clients: [] for clients in LOAD_CLIENTS}
    for _ in range(rounds):
        for clients in LOAD_CLIENTS:
            runs[clients].append(under_load(call, texts, clients, total))
    rows = []
    for clients, measured in runs.items():
        row = {"path": path, "clients": clients, **{
            key: round(float(np.median([m[key] for m in measured])), 2)
            for key in ("p50_ms", "p99_ms", "requests_per_s")}}
        row["vs_one_client"] = round(float(np.median(
            [m["requests_per_s"] / one["requests_per_s"] for m, one in zip(measured, runs[1])])), 2)
        row["p99_over_p50"] = round(float(np.median([m["p99_ms"] / m["p50_ms"]
                                                     for m in measured])), 2)
        rows.append(row)
        print(f"  {row}", flush=True)
    return rows


def batch_one_breakdown(model_dir, texts, requests_count):
    """p50 of one text through each signature of the SavedModel, beside a tf.function that only
    returns its input: what the model and the decoder cost at batch 1 is serving_default minus
    transform_features (tokenizer and TFT layer), minus the call itself."""
    import tensorflow_text  # noqa: F401  registers the tokenizer ops the SavedModel uses

    loaded = tf.saved_model.load(model_dir)
    examples = [to_tf_example({TEXT: text}) for text in texts]
    identity = tf.function(lambda text: text, input_signature=[tf.TensorSpec([None], tf.string)])
    calls = {
        "serving_default (raw text, everything)": (
            lambda i: loaded.signatures["serving_default"](text=tf.constant([texts[i]]))),
        "transform_features (tokenizer, TFT layer)": (
            lambda i: loaded.signatures["transform_features"](examples=tf.constant([examples[i]]))),
        "a tf.function returning its input (the call)": (
            lambda i: identity(tf.constant([texts[i]]))),
    }
    indices = [[i % len(texts)] for i in range(requests_count)]
    return [{"signature": name, **timed(lambda batch, call=call: call(batch[0]), indices)}
            for name, call in calls.items()]


def rest_predict(url):
    """One predict call through Python's own HTTP client on a connection kept open per calling
    thread, as load generators do (it reconnects when a server closes it), JSON through orjson:
    lean, so the row is mostly the server's time (the clients share the server's cores; with the
    standard json module, 8 clients reached 941 requests/s against 1031, 10 paired rounds). The
    `requests` library's client costs more per call; its row at batch 1 shows how much."""
    address = urllib.parse.urlsplit(url)
    local = threading.local()

    def call(batch):
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(address.hostname, address.port,
                                                          timeout=60)
        local.connection.request("POST", address.path + ":predict",
                                 orjson.dumps({"instances": batch}),
                                 {"Content-Type": "application/json"})
        response = local.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return orjson.loads(body)
    return call


def batched_predict(model_dir):
    """One predict call through the local server's Batcher (default batching parameters), in this
    process: server-side batching without HTTP, so its load rows show what batching alone gives."""
    loaded = LoadedVersion(model_dir, version=int(os.path.basename(model_dir)))
    batcher = Batcher()

    def call(batch):
        return batcher.run(loaded, DEFAULT_SIGNATURE,
                           request_inputs(loaded, DEFAULT_SIGNATURE, {TEXT: batch}))
    return call


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(serving_dir, options=(), env=None):
    port, grpc_port = free_port(), free_port()
    process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mtmoe"), "serve",
                                "--serving-dir", serving_dir, "--port", str(port),
                                "--grpc-port", str(grpc_port), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, **(env or {})))
    url = f"http://127.0.0.1:{port}/v1/models/mtmoe"
    for _ in range(300):
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return process, url, f"127.0.0.1:{grpc_port}"
        except requests.ConnectionError:
            time.sleep(1)
    process.kill()
    raise RuntimeError("mtmoe serve did not start")


def default_pools_server(serving_dir):
    """`mtmoe serve` with TensorFlow's own op pool sizes, which the server keeps when the
    variables are set (0: every core)."""
    return start_server(serving_dir, env={"TF_NUM_INTRAOP_THREADS": "0",
                                          "TF_NUM_INTEROP_THREADS": "0"})


def request_log_rows(serving_dir, texts, rounds: int, requests_count: int, load_requests: int):
    """`mtmoe serve` with and without `--log-requests DIR --log-sample 1.0`, side by side: in each
    of `rounds` rounds (the order alternating), REST batch-1 p50 and 8-client throughput on each;
    then the lines the logging server wrote against the requests it answered."""
    import glob
    import tempfile

    folder = tempfile.mkdtemp(prefix="request-log-")
    servers = {"off": start_server(serving_dir),
               "on": start_server(serving_dir, ("--log-requests", folder, "--log-sample", "1.0"))}
    calls = {name: rest_predict(url) for name, (_, url, _) in servers.items()}
    answered = {"off": 0, "on": 0}
    measured = {name: [] for name in servers}
    batches = [[texts[i % len(texts)]] for i in range(requests_count)]
    try:
        for index in range(rounds):
            for name in (("off", "on") if index % 2 == 0 else ("on", "off")):
                batch_one = timed(calls[name], batches)
                load = under_load(calls[name], texts, 8, load_requests)
                answered[name] += 10 + len(batches) + len(texts[:10]) + load_requests // 8 * 8
                measured[name].append({"p50_ms": batch_one["p50_ms"],
                                       "requests_per_s": load["requests_per_s"]})
    finally:
        for process, _, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)
    logged = sum(1 for path in glob.glob(os.path.join(folder, "*.jsonl"))
                 for _ in open(path))
    pairs = list(zip(measured["on"], measured["off"]))
    ratios = {"batch_one_p50": [on["p50_ms"] / off["p50_ms"] for on, off in pairs],
              "eight_clients_throughput": [on["requests_per_s"] / off["requests_per_s"]
                                           for on, off in pairs]}
    row = {"rounds": measured,
           "on_over_off": {key: [round(r, 3) for r in values] for key, values in ratios.items()},
           "median_on_over_off": {key: round(float(np.median(values)), 3)
                                  for key, values in ratios.items()},
           "mean_and_standard_error": {
               key: [round(float(np.mean(values)), 3),
                     round(float(np.std(values, ddof=1) / np.sqrt(len(values))), 3)]
               for key, values in ratios.items()},
           "requests_answered_with_logging": answered["on"], "lines_logged": logged}
    print(f"  request log: {row['median_on_over_off']}, {logged} lines for {answered['on']} "
          "requests", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mtmoe_work/serving_model")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--load-requests", type=int, default=800,
                        help="requests per load row and round, shared by its clients")
    parser.add_argument("--load-rounds", type=int, default=3,
                        help="times each path runs its 1, 8 and 32 clients")
    parser.add_argument("--request-log-rounds", type=int, default=16,
                        help="paired rounds of a server with and one without request logging")
    parser.add_argument("--request-log-load-requests", type=int, default=3200,
                        help="requests per 8-client row of each request-log round (the paired "
                             "rounds vary by +-15%%: longer rows and more rounds for a 5%% bar)")
    args = parser.parse_args()
    model_dir = resolve_model_dir(args.model)
    texts = warmup_texts(model_dir)
    predictor = Predictor(model_dir)
    session = requests.Session()
    serving_dir = os.path.dirname(model_dir)
    process, url, grpc_target = start_server(serving_dir)
    grpc_client = GrpcClient(grpc_target)

    rest = rest_predict(url)
    # The server replays the model's warmup requests before it answers; without them the first
    # request pays for building the graph.
    started = time.perf_counter()
    rest(texts[:1])
    first_request_ms = round(1000 * (time.perf_counter() - started), 2)
    print(f"  first REST request after the server started: {first_request_ms} ms", flush=True)
    paths = {"in-process": predictor.outputs,
             "in-process, batched (the server's Batcher)": batched_predict(model_dir),
             "REST (mtmoe serve)": rest, "gRPC (mtmoe serve)": grpc_client.predict_outputs}
    rows, load = [], []
    breakdown = batch_one_breakdown(model_dir, texts, args.requests)
    try:
        batches_of_one = [[texts[i % len(texts)]] for i in range(args.requests)]
        for size in (1, 32):
            batches = [[texts[(i * size + j) % len(texts)] for j in range(size)]
                       for i in range(args.requests)]
            rows.append({"path": "in-process", "batch": size, **timed(predictor.outputs, batches)})
            rows.append({"path": "REST (mtmoe serve)", "batch": size, **timed(rest, batches)})
        rows.append({"path": "REST (mtmoe serve), requests library client", "batch": 1, **timed(
            lambda batch: session.post(url + ":predict", json={"instances": batch},
                                       timeout=60).raise_for_status(), batches_of_one)})
        for path, call in paths.items():
            load += load_rows(path, call, texts, args.load_requests, args.load_rounds)
    finally:
        grpc_client.close()
        process.terminate()
    default_pools, default_pools_url, _ = default_pools_server(serving_dir)
    try:
        load += load_rows(DEFAULT_POOLS_REST, rest_predict(default_pools_url), texts,
                          args.load_requests, args.load_rounds)
    finally:
        default_pools.terminate()
    request_log = request_log_rows(serving_dir, texts, args.request_log_rounds, args.requests,
                                   args.request_log_load_requests)
    print("| path | batch | p50 ms | p99 ms | texts/s |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['batch']} | {row['p50_ms']} | {row['p99_ms']} | "
              f"{row['texts_per_s']} |")
    print("\nbatch 1, in process, per signature:\n| signature | p50 ms | p99 ms |\n|---|---|---|")
    for row in breakdown:
        print(f"| {row['signature']} | {row['p50_ms']} | {row['p99_ms']} |")
    print("\nunder load, one text per request (medians over rounds):\n| path | clients | p50 ms | "
          "p99 ms | p99/p50 | requests/s | vs one client |\n|---|---|---|---|---|---|---|")
    for row in load:
        print(f"| {row['path']} | {row['clients']} | {row['p50_ms']} | {row['p99_ms']} | "
              f"{row['p99_over_p50']} | {row['requests_per_s']} | {row['vs_one_client']} |")
    write_result("serving_latency", model=model_dir, tensorflow=tf.__version__,
                 first_request_ms=first_request_ms, requests_per_row=args.requests, results=rows,
                 batch_one_breakdown=breakdown,
                 load_requests_per_row=args.load_requests, load_rounds=args.load_rounds,
                 under_load=load, request_log=request_log)


if __name__ == "__main__":
    main()
