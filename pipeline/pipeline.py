"""The TFX pipeline, wired in data order. No ML logic lives here: see components/ and trainer/.

ExampleGen (newest span) -> StatisticsGen -> ExampleValidator (against the curated schema, ImportSchemaGen)
  -> DataGate (stops the run on anomalies, label drift or skew)
  -> Resolver (latest blessed model) -> ServedModelChecker (it, on the new span); with
     schedule.retrain on_decay, the rest runs only when it does not hold:
  -> Resolver (the window of newest spans) -> Transform -> [Tuner]
  -> Trainer (warm-started from the blessed model) -> Evaluator (against it)
  -> TestScorer, and Pusher when the model is blessed.
"""
import contextlib
import json
from typing import Optional

from ml_metadata.proto import metadata_store_pb2
from tfx.components import (Evaluator, ExampleValidator, ImportExampleGen, StatisticsGen, Trainer,
                            Transform, Tuner)
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.experimental.conditionals.conditional import Cond
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, range_config_pb2, trainer_pb2, transform_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from mtmoe.components.data_validation import DATA_GATE, DataGate, LatestIfAnyStrategy
from mtmoe.components.evaluation import build_eval_config
from mtmoe.components.pusher import Pusher
from mtmoe.components.served_model import RETRAIN_PROPERTY, ServedModelChecker
from mtmoe.components.test_scoring import TestScorer
from mtmoe.core.config import Config
from mtmoe.core.file_names import EXPORT_KEY, TUNING_DIR_KEY
from mtmoe.core.formats import SPLITS
from mtmoe.pipeline.facts import RunFacts
from mtmoe.pipeline.paths import TRAINER_CODE, TRANSFORM_CODE, Paths
from mtmoe.pipeline.spans import NewestSpansStrategy, window_range
from mtmoe.trainer.tuning import reference_configs

PREPROCESSING_FN = f"{TRANSFORM_CODE}.preprocessing_fn"
RUN_FN = f"{TRAINER_CODE}.run_fn"
TUNER_FN = f"{TRAINER_CODE}.tuner_fn"
# The task fields Transform reads: loss weights and thresholds stay out so that changing them
# (by hand or by the Tuner) keeps Transform's cache.
_TRANSFORM_TASK_FIELDS = ("name", "type", "label_field", "max_labels", "out_of_scope_label")


_BEAM_RUNNER_CLASSES = {"direct": "DirectRunner", "dataflow": "DataflowRunner",
                        "flink": "FlinkRunner", "spark": "SparkRunner"}


# Up to this much input (the window's TFRecords), the DirectRunner of `beam_workers: 0` runs in the
# pipeline's own process: each Beam job in worker processes first spends seconds starting them
# (importing TensorFlow and TFX), which small data never wins back on a few cores.
IN_PROCESS_MAX_BYTES = 8 << 20
# TFX builds an sdist of itself for remote Beam workers (3-5 s in every Beam component, 4 per run)
# unless the arguments name where the workers' packages come from (tfx/utils/dependency_utils.py);
# the DirectRunner's workers run in this Python environment, so that is what we say.
_DIRECT_WORKERS_ENVIRONMENT = "--sdk_container_image=none"


def beam_args(config: Config, data_bytes: Optional[int] = None):
    """Beam's arguments for every Beam-based component: the runner, its options from the config, and
    tensorflow-text's ops registered in each worker. The DirectRunner runs in this process with
    `beam_workers: 1`, or with 0 (auto) when the run reads at most IN_PROCESS_MAX_BYTES
    (`data_bytes`, unknown to compiled pipelines); otherwise in worker processes (0: one per core)."""
    settings = config.pipeline
    args = [f"--runner={_BEAM_RUNNER_CLASSES[settings.beam_runner]}"]
    small = settings.beam_workers == 0 and data_bytes is not None and \
        data_bytes <= IN_PROCESS_MAX_BYTES
    if settings.beam_runner == "direct" and (settings.beam_workers == 1 or small):
        args += ["--direct_running_mode=in_memory", _DIRECT_WORKERS_ENVIRONMENT]
    elif settings.beam_runner == "direct":
        args += ["--direct_running_mode=multi_processing",
                 f"--direct_num_workers={settings.beam_workers}", _DIRECT_WORKERS_ENVIRONMENT]
    args += [f"--{name}={value}" for name, value in sorted(settings.beam_options.items())]
    return args + ["--beam_plugins=tensorflow_text"]


def example_gen(paths: Paths, span=None, every_span: bool = False):
    """ImportExampleGen over `span-<N>/<split>/` folders: the newest span, or the one given; with
    `every_span`, all spans as one artifact (the window of every span without a window resolver)."""
    range_config = None
    if span is not None:
        range_config = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
            start_span_number=span, end_span_number=span))
    folders = "span-*" if every_span else "span-{SPAN}"
    return ImportExampleGen(
        input_base=paths.data_root,
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=split, pattern=f"{folders}/{split}/*")
            for split in SPLITS]),
        range_config=range_config)


def create_ingest_pipeline(config: Config, paths: Paths, span: int,
                           data_bytes: Optional[int] = None) -> Pipeline:
    """ExampleGen alone, for one span older than the newest: a run ingests only the newest span, so
    spans written before the first run (or between runs) are ingested this way for the window."""
    return _pipeline(config, paths, [example_gen(paths, span)], data_bytes=data_bytes)


def vertex_training(cluster, image: str) -> dict:
    """The Trainer's custom_config entries that make TFX's Vertex AI Trainer run it as a Vertex AI
    custom job: one chief machine and `cluster.workers - 1` more in a second pool, all in `image`
    (Vertex AI sets each machine's TF_CONFIG)."""
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer

    def pool(count):
        return {"machine_spec": {"machine_type": cluster.machine_type}, "replica_count": count,
                "container_spec": {"image_uri": image}}

    return {constants.ENABLE_VERTEX_KEY: True, constants.VERTEX_REGION_KEY: cluster.region,
            vertex_trainer.TRAINING_ARGS_KEY: {"project": cluster.project, "worker_pool_specs": [
                pool(1)] + ([pool(cluster.workers - 1)] if cluster.workers > 1 else [])}}


def create_pipeline(config: Config, paths: Paths, facts: RunFacts, tuning_only: bool = False,
                    compare_weightings: bool = False, local_metadata: bool = True,
                    allow_anomalies: bool = False, training_image: str = "",
                    force: bool = False) -> Pipeline:
    """The whole pipeline; with `tuning_only`, the components up to the Tuner, plus (with
    `compare_weightings`) one Trainer per reference weighting trained as long as a trial.
    `allow_anomalies`: a span that fails data validation goes on (the anomalies are logged).
    `force`: trains even where `schedule.retrain: on_decay` would not (the served model holds).

    `local_metadata`: ML Metadata in an SQLite file of the work dir; off for orchestrators that
    bring their own (Kubeflow Pipelines). Those run no custom resolver, so the window of every span
    (`spans.window: 0`) is one ExampleGen over all span folders there; other windows above 1 are
    refused before this is called (mtmoe.pipeline.orchestrators).

    `facts`: what the DAG depends on besides the config and the paths (pipeline.facts, gathered by
    the runner), so that building the DAG reads and writes nothing.
    `training_image`: with `cluster.project` set, the Trainer is a Vertex AI training job whose
    machines run this image (the compiled Kubeflow v2 pipeline's own)."""
    every_span = not local_metadata and config.spans.window == 0
    new_span = example_gen(paths, every_span=every_span)
    # The statistics of the last span that passed the gate, resolved before this run's gate runs.
    # Kubeflow Pipelines runs TFX's own latest-artifact strategy only.
    accepted_statistics = Resolver(
        strategy_class=LatestIfAnyStrategy if local_metadata else LatestArtifactStrategy,
        statistics=Channel(type=standard_artifacts.ExampleStatistics,
                           producer_component_id=DATA_GATE, output_key="checked_statistics"),
    ).with_id("accepted_statistics_resolver")
    statistics_gen = StatisticsGen(examples=new_span.outputs["examples"])
    statistics_gen.add_upstream_node(accepted_statistics)
    schema_gen = ImportSchemaGen(schema_file=facts.schema_file)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    data_gate = DataGate(
        examples=new_span.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        anomalies=example_validator.outputs["anomalies"],
        schema=schema_gen.outputs["schema"],
        previous_statistics=accepted_statistics.outputs["statistics"],
        label_fields=json.dumps([task.label_field for task in config.tasks]),
        max_label_drift=config.validation.max_label_drift,
        max_split_skew=config.validation.max_split_skew,
        allow_anomalies=int(allow_anomalies),
        schema_source=config.validation.schema).with_id(DATA_GATE)
    components = [new_span, accepted_statistics, statistics_gen, schema_gen, example_validator,
                  data_gate]
    examples = new_span.outputs["examples"]
    if config.spans.window != 1 and not every_span:
        span_window = Resolver(
            strategy_class=NewestSpansStrategy,
            config={"range_config": window_range(config.spans.window)},
            examples=Channel(type=standard_artifacts.Examples,
                             producer_component_id=new_span.id, output_key="examples"),
        ).with_id("span_window_resolver")
        span_window.add_upstream_node(new_span)  # so that the window includes this run's span
        components.append(span_window)
        examples = span_window.outputs["examples"]

    if tuning_only:
        components += _training(config, paths, facts, examples, schema_gen, data_gate,
                                training_image, tuning_only=True,
                                compare_weightings=compare_weightings)
        return _pipeline(config, paths, components, local_metadata, facts.data_bytes)

    model_resolver = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    blessed_model = model_resolver.outputs["model"]
    served_check = ServedModelChecker(examples=new_span.outputs["examples"], model=blessed_model,
                                      config=json.dumps(config.to_dict()),
                                      serving_dir=paths.serving_dir, force=int(force))
    served_check.add_upstream_node(data_gate)  # a span that fails validation is not scored
    components += [model_resolver, served_check]
    # on_decay: what follows runs only when the served model does not hold on the new span.
    retrain = served_check.outputs["served_check"].future()[0].custom_property(RETRAIN_PROPERTY)
    with (Cond(retrain == 1) if config.schedule.retrain == "on_decay"
          else contextlib.nullcontext()):
        components += _training(config, paths, facts, examples, schema_gen, data_gate,
                                training_image, blessed_model=blessed_model)
    return _pipeline(config, paths, components, local_metadata, facts.data_bytes)


def _training(config: Config, paths: Paths, facts: RunFacts, examples, schema_gen, data_gate,
              training_image: str, blessed_model=None, tuning_only: bool = False,
              compare_weightings: bool = False) -> list:
    """Transform, [Tuner], and then either the reference Trainers (`tuning_only`) or the Trainer
    (warm-started from `blessed_model`), Evaluator (against it), TestScorer and Pusher."""
    # Transform sees only what it reads, so that a model, training or threshold change keeps its cache.
    raw_config = config.to_dict()
    transform_config = {
        "tasks": [{field: task[field] for field in _TRANSFORM_TASK_FIELDS} for task in raw_config["tasks"]],
        "text": raw_config["text"]}
    transform = Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"config": transform_config, "source_fingerprint": facts.transform_code},
        # The splits the Trainer and Tuner read: the test split is scored raw, through the exported
        # graph (TestScorer), as the Evaluator scores eval; a transformed copy of it went unread.
        splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=["train", "eval"]),
        # Transform's own TFDV statistics of the raw data (StatisticsGen's again) and of its output:
        # nothing reads them, and they cost a Beam pass over every split. Nor does anything read
        # the analyzer cache it would write per span (no run passes it back as analyzer_cache).
        disable_statistics=True, disable_analyzer_cache=True)
    transform.add_upstream_node(data_gate)  # a span that fails validation is never transformed
    components = [transform]

    def trainer(trainer_config: Config, export: bool = True, **kwargs):
        custom_config = {"config": trainer_config.to_dict(), "source_fingerprint": facts.trainer_code,
                         EXPORT_KEY: export}
        component = Trainer
        if training_image and config.cluster.project:
            from tfx.extensions.google_cloud_ai_platform.trainer.component import (
                Trainer as VertexTrainer)  # imports the Vertex AI client: only when used

            custom_config.update(vertex_training(config.cluster, training_image))
            component = VertexTrainer
        return component(
            run_fn=RUN_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=trainer_pb2.TrainArgs(splits=["train"]),
            eval_args=trainer_pb2.EvalArgs(splits=["eval"]),
            custom_config=custom_config,
            **kwargs)

    tuner = None
    if config.tuning.enabled or tuning_only:
        tuner = Tuner(
            tuner_fn=TUNER_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=trainer_pb2.TrainArgs(splits=["train"]),
            eval_args=trainer_pb2.EvalArgs(splits=["eval"]),
            # The finished-trial count re-runs the Tuner (and so resumes the search) after a run
            # that stopped at its time budget; the search itself lives in paths.tuning_dir.
            custom_config={"config": config.to_dict(), "source_fingerprint": facts.trainer_code,
                           TUNING_DIR_KEY: paths.tuning_dir,
                           "completed_trials": facts.completed_trials})
        components.append(tuner)
    if tuning_only:
        if compare_weightings:
            components += [trainer(reference, export=False).with_id(f"Trainer_{name}")
                           for name, reference in reference_configs(config).items()]
        return components

    trainer_inputs = {"base_model": blessed_model} if config.training.warm_start else {}
    if tuner:
        trainer_inputs["hyperparameters"] = tuner.outputs["best_hyperparameters"]
    trainer_component = trainer(config, **trainer_inputs)
    evaluator = Evaluator(
        examples=examples,
        example_splits=["eval"],
        model=trainer_component.outputs["model"],
        baseline_model=blessed_model,
        eval_config=build_eval_config(config.tasks))
    test_scorer = TestScorer(
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        model=trainer_component.outputs["model"],
        config=json.dumps(config.to_dict()))
    components += [trainer_component, evaluator, test_scorer]

    with Cond(evaluator.outputs["blessing"].future()[0].custom_property("blessed") == 1):
        pusher = Pusher(
            model=trainer_component.outputs["model"],
            # Runners that do not evaluate Cond (Airflow's) still push blessed models only.
            model_blessing=evaluator.outputs["blessing"],
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=paths.serving_dir)))
    components.append(pusher)
    return components


def _pipeline(config: Config, paths: Paths, components, local_metadata: bool = True,
              data_bytes: Optional[int] = None) -> Pipeline:
    return Pipeline(
        pipeline_name=config.pipeline.name,
        pipeline_root=paths.pipeline_root,
        components=components,
        metadata_connection_config=sqlite_metadata(paths.metadata) if local_metadata else None,
        enable_cache=True,
        beam_pipeline_args=beam_args(config, data_bytes))


def sqlite_metadata(path: str, read_only: bool = False) -> metadata_store_pb2.ConnectionConfig:
    """The connection to an SQLite ML Metadata store: TFX's sqlite_metadata_connection_config
    without its makedirs (the runner's gather_run_facts has made the work dir by the time a runner
    opens the store), or read-only for what reads a run back."""
    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    return metadata_store_pb2.ConnectionConfig(sqlite=modes(
        filename_uri=path, connection_mode=modes.READONLY if read_only else modes.READWRITE_OPENCREATE))
