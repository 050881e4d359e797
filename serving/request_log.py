"""A sample of served requests, with their answers, appended to rotating JSONL files: what `mtmoe
monitor` compares with the training data, and what becomes a new span once labelled.

Stock TF Serving writes no such files in its open-source build (tensorflow/serving#408), so the
log lives where the project can hook it: `mtmoe serve --log-requests DIR` and the project's Python
clients. A request is only appended to a list on the way (no lock, no thread woken), with its
answer as the REST body it was answered with (or its outputs). Every FLUSH_SECONDS a thread hands
what piled up, pickled, to a writer process, which decodes the answers into lines and writes them:
on two cores, decoding in the server's interpreter cost 8-client throughput about 8%. Logging never
delays or fails an answer: beyond PENDING_LIMIT waiting requests a sample is dropped (counted),
and a write that fails (a full disk, a folder gone) says so once and pauses logging.

The texts are customer data: the folder is owner-only (0700), each file owner-only (0600), files
rotate at `max_bytes` and are deleted after `keep_days` (or beyond `max_files`), and `mask_digits`
replaces every digit with `#` (account and card numbers) before anything is written.
"""
import atexit
import collections
import logging
import multiprocessing
import os
import pickle
import random
import re
import signal
import threading
import time
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import orjson

from mtmoe.core.errors import UserError
from mtmoe.core.formats import jsonl_objects
from mtmoe.core.tasks import prediction_rows, tasks_from_output_names
from mtmoe.serving.answers import body_columns, prediction_body

log = logging.getLogger(__name__)

FILE_PREFIX, FILE_SUFFIX = "requests-", ".jsonl"
PENDING_LIMIT = 20000  # requests waiting to be handed over; beyond, a sample is dropped
FLUSH_SECONDS = 0.5  # how often waiting requests go to the writer: the most a line lags its answer
_DIGIT = re.compile(r"\d")


def request_files(folder: str):
    """The log's files, oldest first (their names sort by the time they were opened)."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX))


def logged_requests(folder: str) -> Iterator[Tuple[str, dict]]:
    """(`file:line`, row) of every logged text under `folder`, oldest first; a bad line stops with
    its file and line."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no request log folder (see `mtmoe serve --log-requests`)")
    for path in request_files(folder):
        for where, row in jsonl_objects(path):
            if not isinstance(row.get("text"), str):
                raise UserError(f"{where}: a logged request needs a 'text' string")
            yield where, row


class RequestLog:
    """`offer(texts, answer, version)` after each answered request; `close()` at shutdown."""

    def __init__(self, folder: str, sample: float = 1.0, max_bytes: int = 64 << 20,
                 keep_days: float = 30.0, max_files: int = 100, mask_digits: bool = False,
                 seed: Optional[int] = None, warn=log.warning):
        self.folder, self.sample, self.warn = folder, sample, warn
        self.dropped = 0
        self.paused: Optional[str] = None
        self._random = random.Random(seed)
        self._pending: collections.deque = collections.deque()  # appends are atomic: no lock
        self._closing = threading.Event()
        self._process = self._thread = None
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        except OSError as e:
            self._pause(f"cannot write {folder}: {e.strerror or e}")
            return
        context = multiprocessing.get_context("spawn")  # no copy of the server's threads
        self._connection, child = context.Pipe()
        self._written = context.RawValue("q", 0)
        self._process = context.Process(
            target=_write_requests, name="request-log", daemon=True,
            args=(child, self._written, folder, max_bytes, keep_days, max_files, mask_digits))
        self._process.start()
        child.close()
        self._thread = threading.Thread(target=self._hand_over, name="request-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def written(self) -> int:
        """Texts written so far."""
        return self._written.value if self._process is not None else 0

    def offer(self, texts, answer: Union[bytes, Dict[str, np.ndarray]], version) -> None:
        """Queues the sampled texts of one answered request; never blocks, never raises.
        `answer`: the REST body that answered it, or its outputs."""
        if self.paused is not None:
            return
        chosen = None
        if self.sample < 1:
            chosen = [i for i in range(len(texts)) if self._random.random() < self.sample]
            if not chosen:
                return
        if len(self._pending) >= PENDING_LIMIT:
            self.dropped += len(texts) if chosen is None else len(chosen)
            return
        # The outputs are the request's own arrays, never written to after the answer.
        self._pending.append((time.time(), version, texts, answer, chosen))

    def close(self, timeout: float = 5.0) -> None:
        """Hands over what is waiting and lets the writer finish it (up to `timeout` s each),
        then stops the writer. Called at exit too, for clients that never close their log."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._process.join(timeout)
            if not self._thread.is_alive():
                self._heard()
            if self._process.is_alive():
                self._process.kill()  # it ignores SIGTERM

    def _pause(self, reason: str) -> None:
        self.paused = reason
        self.warn(f"request logging is off: {reason}; requests are still answered")

    def _heard(self) -> None:
        """The writer's one message, if it sent it: why it stopped writing."""
        try:
            if self.paused is None and self._connection.poll():
                self._pause(self._connection.recv())
        except (EOFError, OSError):
            pass

    def _hand_over(self) -> None:
        while True:
            closing = self._closing.wait(FLUSH_SECONDS)
            self._heard()
            requests = [self._pending.popleft() for _ in range(len(self._pending))]
            if self.paused is None and requests:
                try:
                    self._connection.send_bytes(pickle.dumps([
                        (stamp, version, *_encoded(texts, answer, chosen))
                        for stamp, version, texts, answer, chosen in requests]))
                except OSError:
                    self._pause("the writer process stopped")
                except Exception:  # a bug of ours must not stop the server either
                    log.exception("request logging failed; it is off")
                    self._pause("an internal error (see the log)")
            if closing:
                try:
                    self._connection.send_bytes(pickle.dumps(None))
                except OSError:
                    pass
                return


def _encoded(texts, answer, chosen):
    """(texts, REST body, chosen) of a waiting request: an answer given as outputs is encoded
    here, as REST would have, for its sampled texts only."""
    if isinstance(answer, bytes):
        return texts, answer, chosen
    if chosen is not None:
        texts = [texts[i] for i in chosen]
        answer = {name: np.asarray(values)[chosen] for name, values in answer.items()}
    return texts, prediction_body(answer, False), None


def _write_requests(connection, written, folder, max_bytes, keep_days, max_files, mask_digits):
    """The writer process: batches of requests in, lines out, until told to stop (or the server
    is gone); the first failure is sent back once, and nothing more is written."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: this process stops
    # when the server closes the log (or is gone), after the last lines, not at the signal.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    writer = _Writer(folder, max_bytes, keep_days, max_files, mask_digits)
    failure = writer.write([])  # opens the first file (and retires old ones) at once
    if failure is not None:
        _tell(connection, failure)
    while True:
        try:
            batch = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):
            batch = None
        if batch is None:
            break
        if failure is None:
            failure = writer.write(batch)
            written.value = writer.written
            if failure is not None:
                _tell(connection, failure)
    writer.close()


def _tell(connection, failure: str) -> None:
    try:
        connection.send(failure)
    except OSError:  # the server is gone
        pass


class _Writer:
    """Appends requests' lines to the folder's current file, opening the next where one would
    pass `max_bytes` and retiring the old ones."""

    def __init__(self, folder, max_bytes, keep_days, max_files, mask_digits):
        self.folder, self.max_bytes = folder, max_bytes
        self.keep_days, self.max_files, self.mask_digits = keep_days, max_files, mask_digits
        self.file, self.path, self.size, self.written = None, None, 0, 0
        self._tasks = {}  # the tasks of each set of output names (a model version's outputs)

    def write(self, requests) -> Optional[str]:
        """Writes the requests; the reason when it could not."""
        try:
            if self.file is None:
                self._open()
            chunks, size = [], 0  # the lines for the current file, not yet written
            for request in requests:
                lines = self._lines(*request)
                if self.size + size + len(lines) > self.max_bytes and self.size + size:
                    self._flush(chunks)
                    self.file.close()
                    self._open()
                    chunks, size = [], 0
                chunks.append(lines)
                size += len(lines)
            self._flush(chunks)
            self.written += sum(len(texts if chosen is None else chosen)
                                for _, _, texts, _, chosen in requests)
        except OSError as e:
            return f"writing {self.folder} failed: {e.strerror or e}"
        except Exception:  # a bug of ours must not stop the server either
            log.exception("request logging failed; it is off")
            return "an internal error (see the log)"
        return None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = os.path.join(self.folder, f"{FILE_PREFIX}{stamp}-{time.time_ns() % 10**9:09d}{FILE_SUFFIX}")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.file, self.path, self.size = os.fdopen(descriptor, "ab"), path, 0
        self._retire()

    def _retire(self) -> None:
        """Deletes the files past `keep_days`, and the oldest beyond `max_files`."""
        files = request_files(self.folder)
        current = self.path
        cutoff = time.time() - self.keep_days * 86400
        old = [path for path in files if path != current and os.path.getmtime(path) < cutoff]
        excess = [path for path in files if path != current and path not in old]
        excess = excess[:max(0, len(files) - len(old) - self.max_files)]
        for path in old + excess:
            os.remove(path)

    def _lines(self, stamp, version, texts, body, chosen) -> bytes:
        outputs = body_columns(body)
        if chosen is not None:
            texts = [texts[i] for i in chosen]
            outputs = {name: [values[i] for i in chosen] for name, values in outputs.items()}
        names = tuple(outputs)
        if names not in self._tasks:
            self._tasks[names] = tasks_from_output_names(outputs)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
        lines = []
        for row in prediction_rows(texts, outputs, self._tasks[names]):
            row = {"time": when, "model_version": version, **row}
            if self.mask_digits:
                row = _masked(row)
            lines.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        return b"".join(lines)

    def _flush(self, chunks: List[bytes]) -> None:
        if chunks:
            data = b"".join(chunks)
            self.file.write(data)
            self.file.flush()
            self.size += len(data)


def _masked(row: dict) -> dict:
    """The row with every digit of its text and tokens replaced by #."""
    row["text"] = _DIGIT.sub("#", row["text"])
    for answer in row.values():
        if isinstance(answer, dict) and "tokens" in answer:
            answer["tokens"] = [_DIGIT.sub("#", token) for token in answer["tokens"]]
    return row
