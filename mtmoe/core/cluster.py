"""This process's place in a multi-worker training, read from TF_CONFIG without TensorFlow (so
that a wrong TF_CONFIG is reported at once)."""
import json
import os
import socket

from mtmoe.core.errors import UserError


def cluster_task(chief: bool, environ=os.environ) -> tuple:
    """(task type, index, number of workers) of this process in TF_CONFIG; a UserError naming
    what is wrong when TF_CONFIG is missing or malformed, or does not make this process the chief
    (`chief`, for `mtmoe run`) or another worker (for `mtmoe train-worker`)."""
    text = environ.get("TF_CONFIG")
    if not text:
        raise UserError("training.distribution is multi_worker but TF_CONFIG is not set: set it to "
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                        '"index": N}} in every worker (README: Distributed training)')
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], int(task["index"])
        size = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not a cluster spec ({e!r}): {text[:200]}") from None
    if kind not in cluster or not 0 <= index < len(cluster[kind]):
        raise UserError(f"TF_CONFIG: task {kind} {index} is not in its cluster {cluster}")
    if is_chief_task(kind, index, environ) != chief:
        raise UserError(
            f"TF_CONFIG makes this process {kind} {index}: "
            + ("start the workers other than the chief with `mtmoe train-worker`" if chief else
               "the chief (task index 0) runs `mtmoe run`"))
    return kind, index, size


def is_chief_task(kind: str, index: int, environ=os.environ) -> bool:
    """The chief: the `chief` task, or worker 0 of a cluster without one (TensorFlow's rule)."""
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in json.loads(
        environ["TF_CONFIG"])["cluster"]


def loopback_cluster(workers: int) -> dict:
    """A TF_CONFIG `cluster` of `workers` workers on free ports of 127.0.0.1, for trying
    multi-worker training on one machine (the benchmark, the tests)."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:  # all bound at once, so that no two get the same port
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return {"worker": [f"127.0.0.1:{port}" for port in ports]}
