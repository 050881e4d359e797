"""What the pipeline's DAG depends on besides the config and the paths, read off the disk before
the DAG is built, so that `create_pipeline` itself does no I/O: the runners (the local runner, the
compiled Airflow DAG and Kubeflow spec) gather these first."""
import os
from dataclasses import dataclass
from typing import Optional

from mtmoe.components.data_validation import pin_schema
from mtmoe.core.config import Config
from mtmoe.pipeline.paths import TRAINER_CODE, TRANSFORM_CODE, Paths, code_fingerprint
from mtmoe.trainer.tuning import completed_trials


@dataclass(frozen=True)
class RunFacts:
    schema_file: str             # the curated schema, pinned under the pipeline root by its content
    transform_code: str          # fingerprints of the code Transform and the Trainer run (cache keys)
    trainer_code: str
    completed_trials: int = 0    # the Tuner's finished trials: a stopped search re-runs and resumes
    data_bytes: Optional[int] = None  # the input a run reads, when known (see beam_args)


def gather_run_facts(config: Config, paths: Paths, data_bytes: Optional[int] = None) -> RunFacts:
    """Pins the schema (writes its copy once) and reads the code and the tuner's folder."""
    return RunFacts(
        schema_file=pin_schema(config.validation.schema, os.path.join(paths.pipeline_root, "schemas")),
        transform_code=code_fingerprint(TRANSFORM_CODE),
        trainer_code=code_fingerprint(TRAINER_CODE),
        completed_trials=completed_trials(paths.tuning_dir, config),
        data_bytes=data_bytes)
