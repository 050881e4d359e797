"""The TFX pipeline, wired in data order. No ML logic lives here: see components/ and trainer/.

ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> Transform -> [Tuner] -> Trainer
  -> Resolver (latest blessed model) -> Evaluator -> TestScorer, and Pusher when the model is blessed.
"""
import hashlib
import json
import os
from dataclasses import dataclass

from tfx import v1 as tfx

from components.evaluation import build_eval_config
from components.test_scoring import TestScorer
from mtmoe.config import Config
from mtmoe.formats import SPLITS
from trainer.module import TUNING_DIR_KEY
from trainer.tuning import completed_trials, reference_configs

PREPROCESSING_FN = "components.transform.preprocessing_fn"
RUN_FN = "trainer.module.run_fn"
TUNER_FN = "trainer.module.tuner_fn"
_SOURCE_PACKAGES = ("mtmoe", "components", "trainer", "serving")
# The task fields Transform reads: loss weights and thresholds stay out so that changing them
# (by hand or by the Tuner) keeps Transform's cache.
_TRANSFORM_TASK_FIELDS = ("name", "type", "label_field", "max_labels")


@dataclass(frozen=True)
class Paths:
    """Where a run reads data and writes everything else."""

    data_root: str
    work_dir: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.work_dir, "pipeline")

    @property
    def metadata(self) -> str:
        return os.path.join(self.work_dir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.work_dir, "serving_model")

    @property
    def serving_config_dir(self) -> str:
        """TF Serving's model config and batching parameters for the serving folder."""
        return os.path.join(self.work_dir, "serving_config")

    @property
    def reports_dir(self) -> str:
        return os.path.join(self.work_dir, "reports")

    def report_dir(self, run_id: str) -> str:
        return os.path.join(self.reports_dir, run_id)

    @property
    def tuning_dir(self) -> str:
        """Keras Tuner's searches, outside any one run's artifacts so that a re-run resumes them."""
        return os.path.join(self.pipeline_root, "tuning")


def source_fingerprint() -> str:
    """A hash of the project's module code.

    Transform and Trainer are named by function path, so TFX's cache key does not see code changes;
    this fingerprint goes into their custom_config so that changed code re-runs them.
    """
    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in _SOURCE_PACKAGES:
        for folder, _, files in sorted(os.walk(os.path.join(root, package))):
            for name in sorted(f for f in files if f.endswith((".py", ".yaml"))):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(name.encode() + f.read())
    return digest.hexdigest()[:16]


def beam_args(config: Config):
    return ["--direct_running_mode=multi_processing",
            f"--direct_num_workers={config.pipeline.beam_workers}",
            "--beam_plugins=tensorflow_text"]


def create_pipeline(config: Config, paths: Paths, tuning_only: bool = False,
                    compare_weightings: bool = False) -> tfx.dsl.Pipeline:
    """The whole pipeline; with `tuning_only`, the components up to the Tuner, plus (with
    `compare_weightings`) one Trainer per reference weighting trained as long as a trial."""
    fingerprint = source_fingerprint()
    # Transform sees only what it reads, so that a model, training or threshold change keeps its cache.
    raw_config = config.to_dict()
    transform_config = {
        "tasks": [{field: task[field] for field in _TRANSFORM_TASK_FIELDS} for task in raw_config["tasks"]],
        "text": raw_config["text"]}

    example_gen = tfx.components.ImportExampleGen(
        input_base=paths.data_root,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name=split, pattern=f"span-{{SPAN}}/{split}/*")
            for split in SPLITS]))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={"config": transform_config, "source_fingerprint": fingerprint},
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=list(SPLITS)))
    components = [example_gen, statistics_gen, schema_gen, example_validator, transform]

    def trainer(trainer_config: Config, **kwargs):
        return tfx.components.Trainer(
            run_fn=RUN_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(splits=["train"]),
            eval_args=tfx.proto.EvalArgs(splits=["eval"]),
            custom_config={"config": trainer_config.to_dict(), "source_fingerprint": fingerprint},
            **kwargs)

    tuner = None
    if config.tuning.enabled or tuning_only:
        tuner = tfx.components.Tuner(
            tuner_fn=TUNER_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(splits=["train"]),
            eval_args=tfx.proto.EvalArgs(splits=["eval"]),
            # The finished-trial count re-runs the Tuner (and so resumes the search) after a run
            # that stopped at its time budget; the search itself lives in paths.tuning_dir.
            custom_config={"config": config.to_dict(), "source_fingerprint": fingerprint,
                           TUNING_DIR_KEY: paths.tuning_dir,
                           "completed_trials": completed_trials(paths.tuning_dir, config)})
        components.append(tuner)
    if tuning_only:
        if compare_weightings:
            components += [trainer(reference).with_id(f"Trainer_{name}")
                           for name, reference in reference_configs(config).items()]
        return _pipeline(config, paths, components)

    trainer_component = trainer(
        config, **({"hyperparameters": tuner.outputs["best_hyperparameters"]} if tuner else {}))
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        example_splits=["eval"],
        model=trainer_component.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=build_eval_config(config.tasks))
    test_scorer = TestScorer(
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        model=trainer_component.outputs["model"],
        config=json.dumps(config.to_dict()))
    components += [trainer_component, model_resolver, evaluator, test_scorer]

    with tfx.dsl.Cond(evaluator.outputs["blessing"].future()[0].custom_property("blessed") == 1):
        pusher = tfx.components.Pusher(
            model=trainer_component.outputs["model"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=paths.serving_dir)))
    components.append(pusher)
    return _pipeline(config, paths, components)


def _pipeline(config: Config, paths: Paths, components) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline.name,
        pipeline_root=paths.pipeline_root,
        components=components,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            paths.metadata),
        enable_cache=True,
        beam_pipeline_args=beam_args(config))
