"""Server-side batching and the REST app's error answers, in process with a stand-in model."""
import asyncio
import json
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from mtmoe.serving.deploy import batch_threads, batching_parameters, op_threads
from mtmoe.serving.server import Batcher, RestApp


class _Model:
    """A model whose signatures echo their text input and record each batch they ran."""

    def __init__(self):
        self.batches = []
        self.signatures = {name: self._signature(name) for name in ("serving_default", "other")}

    def _signature(self, name):
        def run(text):
            text = tf.convert_to_tensor(text)  # as a signature does with the batcher's arrays
            self.batches.append((name, [t.decode() for t in text.numpy()]))
            if any(t == b"boom" for t in text.numpy()):
                raise tf.errors.InvalidArgumentError(None, None, "boom in the batch")
            return {"echo": text, "length": tf.strings.length(text)}
        return run


class _Loaded:
    def __init__(self, version=1):
        self.version, self.model = version, _Model()
        self.signatures = self.model.signatures


def _concurrently(batcher, requests):
    """Submits every (loaded, signature, texts) at once; returns each one's outputs or error."""
    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def ask(i, loaded, signature, texts):
        start.wait()
        try:
            results[i] = batcher.run(loaded, signature, {"text": tf.constant(texts)})
        except Exception as e:  # noqa: BLE001  the test looks at what each request got
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i, *r)) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def batcher():
    # One batch thread and a long wait, so that concurrent requests always meet in a batch.
    batcher = Batcher(batching_parameters(max_batch_size=8, batch_timeout_micros=1_000_000,
                                          num_batch_threads=1))
    yield batcher
    batcher.stop()


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows(batcher):
    loaded = _Loaded()
    requests = [(loaded, "serving_default", [f"text {i}"] * (1 + i % 2)) for i in range(6)]
    results = _concurrently(batcher, requests)
    for (_, _, texts), outputs in zip(requests, results):
        assert [t.decode() for t in outputs["echo"]] == texts
        np.testing.assert_array_equal(outputs["length"], [len(t) for t in texts])
    sizes = [len(texts) for _, texts in loaded.model.batches]
    assert sum(sizes) == 9 and len(sizes) < len(requests) and max(sizes) <= 8


def test_requests_from_an_event_loop_get_their_rows_on_the_loop(batcher):
    """The REST path: futures of the caller's loop, settled there (a failing batch fails each)."""
    loaded = _Loaded()

    async def ask(texts):
        loop = asyncio.get_running_loop()
        pending = [batcher.submit(loaded, "serving_default", {"text": tf.constant([text])}, loop)
                   for text in texts]
        return await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 30)

    texts = [f"text {i}" for i in range(5)]
    results = asyncio.run(ask(texts))
    assert [[t.decode() for t in result["echo"]] for result in results] == [[t] for t in texts]
    assert loaded.model.batches == [("serving_default", texts)]
    failed = asyncio.run(ask(["boom", "fine"]))
    assert all(isinstance(result, tf.errors.InvalidArgumentError) for result in failed)


def test_signatures_and_versions_never_share_a_batch(batcher):
    old, new = _Loaded(1), _Loaded(2)
    _concurrently(batcher, [(old, "serving_default", ["a"]), (old, "other", ["b"]),
                            (new, "serving_default", ["c"]), (old, "serving_default", ["d"])])
    assert new.model.batches == [("serving_default", ["c"])]
    assert ("other", ["b"]) in old.model.batches
    assert sorted(t for name, texts in old.model.batches if name == "serving_default"
                  for t in texts) == ["a", "d"]


def test_a_request_larger_than_a_batch_runs_whole_and_alone(batcher):
    loaded = _Loaded()
    outputs, = _concurrently(batcher, [(loaded, "serving_default", [str(i) for i in range(20)])])
    assert len(outputs["echo"]) == 20 and loaded.model.batches == [
        ("serving_default", [str(i) for i in range(20)])]


def test_a_failing_batch_fails_each_of_its_requests(batcher):
    loaded = _Loaded()
    results = _concurrently(batcher, [(loaded, "serving_default", ["boom"]),
                                      (loaded, "serving_default", ["fine"])])
    shared = len(loaded.model.batches) == 1
    assert isinstance(results[0], tf.errors.InvalidArgumentError)
    assert isinstance(results[1], tf.errors.InvalidArgumentError) == shared


def test_without_a_wait_requests_queued_behind_a_busy_thread_share_the_next_batch():
    """batch_timeout_micros 0 (the default) still batches: what arrives while the batch thread is
    busy runs together once it is free."""
    batcher = Batcher(batching_parameters(max_batch_size=8, num_batch_threads=1))
    loaded, running, release = _Loaded(), threading.Event(), threading.Event()
    echo = loaded.model.signatures["serving_default"]

    def slow_first_batch(text):
        if not running.is_set():
            running.set()
            release.wait(timeout=30)
        return echo(text)

    loaded.model.signatures["serving_default"] = slow_first_batch
    try:
        first = threading.Thread(target=batcher.run,
                                 args=(loaded, "serving_default", {"text": tf.constant(["first"])}))
        first.start()
        assert running.wait(timeout=30)
        queued = [(loaded, "serving_default", [f"text {i}"]) for i in range(4)]
        waiting = threading.Thread(target=_concurrently, args=(batcher, queued))
        waiting.start()
        deadline = time.monotonic() + 30
        while batcher.queue.qsize() < len(queued) and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        waiting.join(timeout=60)
        first.join(timeout=60)
    finally:
        release.set()
        batcher.stop()
    (_, first_batch), (_, next_batch) = loaded.model.batches
    assert first_batch == ["first"] and sorted(next_batch) == [f"text {i}" for i in range(4)]


def test_without_num_batch_threads_there_is_one_batch_thread_per_core():
    """As in TF Serving, whose default is the machine's parallelism; the pipeline's file leaves
    the field out."""
    assert batch_threads(batching_parameters(num_batch_threads=3)) == 3
    assert batch_threads(batching_parameters()) == len(os.sched_getaffinity(0))


def test_tensorflow_op_pools_get_the_cores_each_batch_thread_has_to_itself():
    cores = len(os.sched_getaffinity(0))
    assert op_threads(batching_parameters()) == 1  # a batch thread per core
    assert op_threads(batching_parameters(num_batch_threads=1)) == cores
    assert op_threads(batching_parameters(num_batch_threads=4 * cores)) == 1


class _BrokenWatcher:
    def current(self):
        raise RuntimeError("a bug")


def test_an_unexpected_error_is_a_json_500():
    app = RestApp(_BrokenWatcher(), "mtmoe", batcher=None)
    status, body = asyncio.run(app.respond("POST", "/v1/models/mtmoe:predict",
                                           json.dumps({"instances": ["a"]}).encode()))
    assert status == 500 and "internal error" in json.loads(body)["error"]
