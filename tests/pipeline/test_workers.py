"""How a `mtmoe train-worker` process finds the Trainer the chief started: in ML Metadata, the
pipeline's Trainer node's execution that is running and began after the worker started."""
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from mtmoe.core.errors import UserError
from mtmoe.pipeline.paths import Paths
from mtmoe.pipeline.workers import wait_for_trainer


def _trainer_execution(store, pipeline, state):
    """An execution of `<pipeline>.Trainer` in `state`, as TFX's launcher records one."""
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    node, = store.get_contexts_by_type("node") or [None]
    if node is None:
        context = metadata_store_pb2.Context(type_id=context_type, name=f"{pipeline}.Trainer")
        node_id, = store.put_contexts([context])
    else:
        node_id = node.id
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="Trainer"))
    execution = metadata_store_pb2.Execution(type_id=execution_type, last_known_state=state)
    execution_id, = store.put_executions([execution])
    store.put_attributions_and_associations(
        [], [metadata_store_pb2.Association(context_id=node_id, execution_id=execution_id)])
    return execution_id


@pytest.fixture
def work(tmp_path):
    paths = Paths(data_root="", work_dir=str(tmp_path))
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = paths.metadata
    return paths, metadata_store.MetadataStore(connection)


def test_a_worker_joins_the_running_trainer_of_its_pipeline(work):
    paths, store = work
    started = time.time() - 1
    _trainer_execution(store, "mine", metadata_store_pb2.Execution.COMPLETE)  # an earlier run's
    running = _trainer_execution(store, "mine", metadata_store_pb2.Execution.RUNNING)
    _, execution = wait_for_trainer(paths, "mine", started_after=started, timeout=5)
    assert execution.id == running


def test_a_worker_ignores_trainers_from_before_it_started(work):
    """A run killed mid-Trainer leaves its execution RUNNING for ever: a worker started later
    must not train with it."""
    paths, store = work
    _trainer_execution(store, "mine", metadata_store_pb2.Execution.RUNNING)
    with pytest.raises(UserError, match=f"no Trainer of pipeline mine started in {paths.work_dir} "
                                        "within 0 s"):
        wait_for_trainer(paths, "mine", started_after=time.time() + 5, timeout=0)


def test_a_worker_waits_for_the_chief_to_create_the_metadata(tmp_path):
    with pytest.raises(UserError, match="no Trainer of pipeline mine started"):
        wait_for_trainer(Paths(data_root="", work_dir=str(tmp_path / "none")), "mine",
                         started_after=0, timeout=0)
