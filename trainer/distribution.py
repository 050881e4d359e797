"""tf.distribute for the Trainer: which strategy, which worker writes, how data is split.

Multi-worker training follows TensorFlow's multi-worker guide: every worker runs the same
training and saving code (saving may need collective ops); only the chief's outputs are kept, the
others write to temporary folders they delete.
"""
import contextlib
import functools
import os
import shutil
import tempfile

import tensorflow as tf

from mtmoe.core.cluster import cluster_task, is_chief_task


@functools.lru_cache(maxsize=None)
def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """`mirrored`: one replica per local GPU (per logical CPU without one); `multi_worker`: the
    cluster in TF_CONFIG (waits until every worker in it has started); `none`: the default.

    One strategy per process: a second MirroredStrategy's collective ops clash with the first's
    (several Trainers run in one process under LocalDagRunner), and a multi-worker strategy must
    exist before anything else uses TensorFlow's runtime (`mtmoe run` makes it first)."""
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def in_multi_worker_mode(strategy=None) -> bool:
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        resolver and resolver.cluster_spec().jobs)


def is_chief(strategy) -> bool:
    """Whether this process keeps what the training writes (always, outside multi-worker)."""
    if not in_multi_worker_mode(strategy):
        return True
    resolver = strategy.cluster_resolver
    return is_chief_task(resolver.task_type, resolver.task_id)


@contextlib.contextmanager
def output_folders(strategy, *folders):
    """The folders this process writes to: `folders` on the chief; on any other worker, new
    folders in a temporary directory, deleted on leaving."""
    if is_chief(strategy):
        yield folders
        return
    scratch = tempfile.mkdtemp(prefix="mtmoe-worker-")
    try:
        yield tuple(os.path.join(scratch, str(i), os.path.basename(folder))
                    for i, folder in enumerate(folders))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def shard_by_example(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Workers split each global batch by examples: file sharding would need at least one file per
    worker, and a Transform output may have a single file per split."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def join_cluster(chief: bool, echo) -> tf.distribute.Strategy:
    """Starts this process's part of the TF_CONFIG cluster, the chief's (`mtmoe run`) or another
    worker's (`mtmoe train-worker`), and waits until every worker has joined. First thing in the
    process: TensorFlow sets collective ops up at program start."""
    kind, index, size = cluster_task(chief)
    echo(f"multi-worker training: {kind} {index} of {size}; waiting until all {size} have joined")
    strategy = distribution_strategy("multi_worker")
    echo(f"all {size} training workers joined")
    return strategy
