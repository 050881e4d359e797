"""A sample of served requests, with their answers, appended to rotating JSONL files: what `mtmoe
monitor` compares with the training data, and what becomes a new span once labelled.

Stock TF Serving writes no such files in its open-source build (tensorflow/serving#408), so the
log lives where the project can hook it: `mtmoe serve --log-requests DIR` and the project's Python
clients. A request is only appended to a list on the way (no lock, no thread woken): a background
thread takes what piled up every FLUSH_SECONDS, decodes it and writes it with one flush, so logging
never delays or fails an answer and costs the server's interpreter one wake-up per interval, not
one per request. Beyond PENDING_LIMIT waiting requests a sample is dropped (counted); a write that
fails (a full disk, a folder gone) says so once and pauses logging.

The texts are customer data: the folder is owner-only (0700), each file owner-only (0600), files
rotate at `max_bytes` and are deleted after `keep_days` (or beyond `max_files`), and `mask_digits`
replaces every digit with `#` (account and card numbers) before anything is written.
"""
import collections
import logging
import os
import random
import re
import threading
import time
from typing import Dict, Optional

import numpy as np
import orjson

from mtmoe.core.tasks import prediction_rows, tasks_from_output_names

log = logging.getLogger(__name__)

FILE_PREFIX, FILE_SUFFIX = "requests-", ".jsonl"
PENDING_LIMIT = 20000  # requests waiting to be written; beyond, a sample is dropped
FLUSH_SECONDS = 0.5  # how often the writer takes what is waiting: the most a line lags its answer
_DIGIT = re.compile(r"\d")


def request_files(folder: str):
    """The log's files, oldest first (their names sort by the time they were opened)."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX))


class RequestLog:
    """`offer(texts, outputs, version)` after each answered request; `close()` at shutdown."""

    def __init__(self, folder: str, sample: float = 1.0, max_bytes: int = 64 << 20,
                 keep_days: float = 30.0, max_files: int = 100, mask_digits: bool = False,
                 seed: Optional[int] = None, warn=log.warning):
        self.folder, self.sample, self.max_bytes = folder, sample, max_bytes
        self.keep_days, self.max_files, self.mask_digits = keep_days, max_files, mask_digits
        self.warn = warn
        self.written = self.dropped = 0
        self.paused: Optional[str] = None
        self._random = random.Random(seed)
        self._pending: collections.deque = collections.deque()  # appends are atomic: no lock
        self._closing = threading.Event()
        self._tasks = {}  # the tasks of each set of output names (a model version's outputs)
        self._file, self._size = None, 0
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
            self._open()
        except OSError as e:
            self._pause(f"cannot write {folder}: {e.strerror or e}")
        self._thread = threading.Thread(target=self._work, name="request-log", daemon=True)
        self._thread.start()

    def offer(self, texts, outputs: Dict[str, np.ndarray], version: int) -> None:
        """Queues the sampled texts of one answered request; never blocks, never raises."""
        if self.paused is not None:
            return
        if self.sample < 1:
            chosen = [i for i in range(len(texts)) if self._random.random() < self.sample]
            if not chosen:
                return
            texts = [texts[i] for i in chosen]
            outputs = {name: np.asarray(value)[chosen] for name, value in outputs.items()}
        if len(self._pending) >= PENDING_LIMIT:
            self.dropped += len(texts)
            return
        # The outputs are the request's own arrays, never written to after the answer.
        self._pending.append((time.time(), version, texts, outputs))

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is waiting (up to `timeout` s), then closes the file."""
        self._closing.set()
        self._thread.join(timeout)
        if self._file is not None:
            self._file.close()
            self._file = None

    def _pause(self, reason: str) -> None:
        self.paused = reason
        self.warn(f"request logging is off: {reason}; requests are still answered")

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = os.path.join(self.folder, f"{FILE_PREFIX}{stamp}-{time.time_ns() % 10**9:09d}{FILE_SUFFIX}")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file, self._size = os.fdopen(descriptor, "ab"), 0
        self._retire()

    def _retire(self) -> None:
        """Deletes the files past `keep_days`, and the oldest beyond `max_files`."""
        files = request_files(self.folder)
        current = self._file.name if self._file is not None else None
        cutoff = time.time() - self.keep_days * 86400
        old = [path for path in files if path != current and os.path.getmtime(path) < cutoff]
        excess = [path for path in files if path != current and path not in old]
        excess = excess[:max(0, len(files) - len(old) - self.max_files)]
        for path in old + excess:
            os.remove(path)

    def _lines(self, stamp, version, texts, outputs) -> bytes:
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

    def _work(self) -> None:
        while True:
            closing = self._closing.wait(FLUSH_SECONDS)
            requests = [self._pending.popleft() for _ in range(len(self._pending))]
            if self.paused is None and requests:
                self._write(requests)
            if closing:
                return

    def _write(self, requests) -> None:
        """Appends the requests' lines, opening the next file where one would pass `max_bytes`."""
        try:
            chunks, size = [], 0  # the lines for the current file, not yet written
            for request in requests:
                lines = self._lines(*request)
                if self._size + size + len(lines) > self.max_bytes and self._size + size:
                    self._flush(chunks)
                    self._file.close()
                    self._open()
                    chunks, size = [], 0
                chunks.append(lines)
                size += len(lines)
            self._flush(chunks)
            self.written += sum(len(texts) for _, _, texts, _ in requests)
        except OSError as e:
            self._pause(f"writing {self.folder} failed: {e.strerror or e}")
        except Exception:  # a bug of ours must not stop the server either
            log.exception("request logging failed; it is off")
            self.paused = "an internal error (see the log)"

    def _flush(self, chunks) -> None:
        if chunks:
            data = b"".join(chunks)
            self._file.write(data)
            self._file.flush()
            self._size += len(data)


def _masked(row: dict) -> dict:
    """The row with every digit of its text and tokens replaced by #."""
    row["text"] = _DIGIT.sub("#", row["text"])
    for answer in row.values():
        if isinstance(answer, dict) and "tokens" in answer:
            answer["tokens"] = [_DIGIT.sub("#", token) for token in answer["tokens"]]
    return row
