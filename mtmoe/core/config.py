"""The one config every stage reads: tasks, text settings, model, training and pipeline options.

A config is YAML (the default ships in mtmoe/configs/default.yaml). It becomes a frozen `Config`; the
pipeline hands `Config.to_dict()` to Transform and Trainer as `custom_config`, and they rebuild it with
`Config.from_dict`, so every stage sees the same tasks in the same order.
"""
import dataclasses
import os
import re
from importlib import resources
from typing import Any, Dict, Optional, Tuple

import yaml

from mtmoe.core.errors import UserError
from mtmoe.core.feature_names import RESERVED

DEFAULT_CONFIG = "default.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    name: str
    type: str
    label_field: str
    loss_weight: float = 1.0
    min_value: float = 0.0
    max_drop: float = 1.0
    max_labels: int = 8  # multilabel: most labels one example may carry


@dataclasses.dataclass(frozen=True)
class TextConfig:
    max_tokens: int = 32
    vocab_size: int = 20000
    max_chars: int = 12  # characters per token for the spelling signal; 0 turns it off


TRUNKS = ("dense", "mmoe", "deepseek_moe")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    trunk: str = "deepseek_moe"
    embedding_dim: int = 64
    char_dim: int = 16
    num_blocks: int = 2
    num_heads: int = 4
    ff_dim: int = 128            # dense: feed-forward width; mmoe: width of each expert
    num_experts: int = 4         # mmoe: experts shared by the task gates
    shared_experts: int = 1      # deepseek_moe: K_s always-on experts
    routed_experts: int = 8      # deepseek_moe: N_r fine-grained routed experts
    top_k: int = 2
    expert_dim: int = 32         # deepseek_moe: width of each expert
    capacity_factor: float = 1.25
    dense_dispatch: bool = False
    balance_alpha: float = 0.01
    dropout: float = 0.1
    recurrent: bool = False      # a BiLSTM sublayer on the embeddings, before the first block
    # Token-tagging heads read the classification tasks' predicted class probabilities at every
    # token (the intent informs the slots); no effect without a classification task.
    tags_see_classes: bool = False
    # A GloVe/fastText text file whose vectors start the token embedding (words of the training
    # vocabulary only); relative to the config file's folder; "" = random initialisation.
    word_vectors: str = ""


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 0.002
    learning_rate_schedule: str = "constant"  # constant | cosine: down to ~0 over the run's epochs
    weight_decay: float = 0.004
    label_smoothing: float = 0.0
    gradient_accumulation_steps: int = 1
    fgm_epsilon: float = 0.0     # > 0: adversarial training on the token embeddings (FGM)
    seed: int = 42
    mixed_precision: str = "auto"
    loss_weighting: str = "fixed"  # fixed: w_t = loss_weight (or the Tuner's); uncertainty: learned
    warm_start: bool = True      # start from the latest blessed model when it is compatible
    warm_start_epochs: int = 3   # epochs of a warm-started training (`epochs` from scratch)
    # The weights of the epoch with the best val_objective are kept; training stops after this many
    # epochs without a better one (0 = never stops early).
    patience: int = 0
    # Probability that a token seen once in training becomes the out-of-vocabulary id in a training
    # step (its characters stay): the OOV vector learns, and unseen words lean on the characters.
    word_dropout: float = 0.0
    # Token tagging loss: each text's mean over its tokens, then the mean over texts
    # (example_mean), or the mean over all tokens of the batch (token_mean).
    tagging_loss: str = "example_mean"
    distribution: str = "none"   # tf.distribute strategy: none | mirrored | multi_worker


# The task types; mtmoe.core.tasks implements each (labels, head, loss, metrics, decoding). Named here so
# that a config is checked without loading TensorFlow.
CLASSIFICATION, MULTILABEL, TOKEN_TAGGING = "classification", "multilabel", "token_tagging"
TASK_TYPE_NAMES = (CLASSIFICATION, MULTILABEL, TOKEN_TAGGING)
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
TAGGING_LOSSES = ("example_mean", "token_mean")
TUNING_ALGORITHMS = ("bayesian", "hyperband", "random")


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    enabled: bool = False                 # true: the Tuner searches before the Trainer trains
    algorithm: str = "bayesian"           # bayesian | hyperband | random
    max_trials: int = 8
    epochs_per_trial: int = 3
    budget_minutes: float = 0.0           # wall-clock limit, checked between trials; 0 = none
    loss_weight_range: Tuple[float, ...] = (0.1, 10.0)  # each task's weight, log-uniform
    learning_rate_range: Tuple[float, ...] = ()  # (low, high): searched log-uniform too
    top_k_choices: Tuple[int, ...] = ()          # deepseek_moe: e.g. (1, 2, 4)
    routed_experts_choices: Tuple[int, ...] = ()  # deepseek_moe: e.g. (4, 8, 16)
    # {task: weight} of each task's primary validation metric in the objective; {} = plain mean.
    objective_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 7


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    # Token counts that bound the Evaluator's length slices: (5, 10, 20) -> <=5, 6-10, 11-20, >20.
    length_buckets: Tuple[int, ...] = (5, 10, 20)


@dataclasses.dataclass(frozen=True)
class SpansConfig:
    window: int = 0  # train and evaluate on the newest N spans; 0 = every span


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    # The curated schema (`mtmoe schema update` writes it); relative to the config file's folder;
    # "" = <config file name>.schema.pbtxt beside it. Absolute once loaded.
    schema: str = ""
    max_label_drift: float = 0.25  # L-infinity: a label field, new span's train vs the previous span's
    max_split_skew: float = 0.25   # L-infinity: a label field, new span's eval / test vs its train


# The options (pipeline.beam_options) each Beam runner cannot start without.
BEAM_RUNNER_OPTIONS = {"direct": (), "dataflow": ("project", "region", "temp_location"),
                       "flink": ("flink_master",), "spark": ("spark_master_url",)}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str = "mtmoe"
    beam_runner: str = "direct"   # direct | dataflow | flink | spark
    beam_workers: int = 0         # direct: 0 = in-process for small input, else one worker per core; 1 = in-process; N workers
    # The runner's own options, as --name=value: e.g. project, region, temp_location (dataflow).
    beam_options: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """A managed training job for the Trainer of a compiled Kubeflow v2 / Vertex AI pipeline
    (`mtmoe compile --target kubeflow-v2`); `mtmoe run` trains on this machine whatever it says."""
    project: str = ""             # Google Cloud project; "" = the Trainer runs in the pipeline's own step
    region: str = "us-central1"
    workers: int = 1              # machines, the chief included; > 1 needs training.distribution multi_worker
    machine_type: str = "n1-standard-4"


@dataclasses.dataclass(frozen=True)
class Config:
    tasks: Tuple[TaskConfig, ...]
    text: TextConfig = TextConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tuning: TuningConfig = TuningConfig()
    spans: SpansConfig = SpansConfig()
    validation: ValidationConfig = ValidationConfig()
    pipeline: PipelineConfig = PipelineConfig()
    cluster: ClusterConfig = ClusterConfig()
    source: str = "<dict>"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any], source: str = "<dict>") -> "Config":
        return _parse(raw, source)

    def with_overrides(self, **training) -> "Config":
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **training))

    def with_loss_weights(self, weights: Dict[str, float]) -> "Config":
        return dataclasses.replace(self, tasks=tuple(
            dataclasses.replace(t, loss_weight=float(weights.get(t.name, t.loss_weight)))
            for t in self.tasks))


def load_config(path: Optional[str] = None) -> Config:
    """Reads a YAML config (the packaged default when `path` is None) and validates it."""
    if path is None:
        source = f"mtmoe/configs/{DEFAULT_CONFIG}"
        folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
        text = resources.files("mtmoe.configs").joinpath(DEFAULT_CONFIG).read_text()
    else:
        folder = os.path.dirname(os.path.abspath(path))
        source = path
        if not os.path.isfile(path):
            raise UserError(f"{path}: config file not found")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f"{source}:{line + 1}" if line is not None else source
        raise UserError(f"{where}: config is not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{source}: config must be a mapping with a 'tasks' list")
    config = _parse(raw, source)
    schema = config.validation.schema or os.path.splitext(os.path.basename(source))[0] + ".schema.pbtxt"
    vectors = config.model.word_vectors
    if vectors and "://" not in vectors:
        vectors = os.path.join(folder, vectors)
        if not os.path.isfile(vectors):
            raise UserError(f"{source}: model.word_vectors: {vectors}: file not found")
    return dataclasses.replace(
        config, validation=dataclasses.replace(config.validation, schema=os.path.join(folder, schema)),
        model=dataclasses.replace(config.model, word_vectors=vectors))


def _section(cls, raw: Dict[str, Any], key: str, source: str):
    values = raw.get(key) or {}
    if not isinstance(values, dict):
        raise UserError(f"{source}: '{key}' must be a mapping")
    return _build(cls, values, f"{source}: {key}")


def _build(cls, values: Dict[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        spec = fields[name]
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING \
            else spec.default
        expected = type(default) if default is not dataclasses.MISSING else str
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise UserError(f"{where}.{name}: expected {expected.__name__}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        missing = [f for f, spec in fields.items() if f not in kwargs and spec.default is
                   dataclasses.MISSING and spec.default_factory is dataclasses.MISSING]
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}") from e


def _parse(raw: Dict[str, Any], source: str) -> Config:
    raw_tasks = raw.get("tasks")
    if not isinstance(raw_tasks, (list, tuple)) or not raw_tasks:
        raise UserError(f"{source}: 'tasks' must be a non-empty list")
    tasks = []
    for i, raw_task in enumerate(raw_tasks):
        where = f"{source}: tasks[{i}]"
        if not isinstance(raw_task, dict):
            raise UserError(f"{where}: each task must be a mapping")
        task = _build(TaskConfig, raw_task, where)
        if not _NAME.match(task.name):
            raise UserError(f"{where}.name: {task.name!r} must be lower_snake_case")
        if task.type not in TASK_TYPE_NAMES:
            raise UserError(f"{where}.type: unknown task type {task.type!r}; "
                            f"known: {', '.join(sorted(TASK_TYPE_NAMES))}")
        if task.loss_weight < 0:
            raise UserError(f"{where}.loss_weight: must be >= 0, got {task.loss_weight}")
        for attr in ("name", "label_field"):
            if getattr(task, attr) in RESERVED:
                raise UserError(f"{where}.{attr}: {getattr(task, attr)!r} is reserved for the input text")
        tasks.append(task)
    for attr in ("name", "label_field"):
        seen = [getattr(t, attr) for t in tasks]
        dupes = sorted({v for v in seen if seen.count(v) > 1})
        if dupes:
            raise UserError(f"{source}: tasks: duplicate {attr} {', '.join(dupes)}")
    unknown = sorted(set(raw) - {"tasks", "text", "model", "training", "evaluation", "tuning",
                                  "spans", "validation", "pipeline", "cluster", "source"})
    if unknown:
        raise UserError(f"{source}: unknown section(s) {', '.join(unknown)}")
    config = Config(
        tasks=tuple(tasks),
        text=_section(TextConfig, raw, "text", source),
        model=_section(ModelConfig, raw, "model", source),
        training=_section(TrainingConfig, raw, "training", source),
        evaluation=_section(EvaluationConfig, raw, "evaluation", source),
        tuning=_section(TuningConfig, raw, "tuning", source),
        spans=_section(SpansConfig, raw, "spans", source),
        validation=_section(ValidationConfig, raw, "validation", source),
        pipeline=_section(PipelineConfig, raw, "pipeline", source),
        cluster=_section(ClusterConfig, raw, "cluster", source),
        source=raw.get("source", source),
    )
    if config.model.trunk not in TRUNKS:
        raise UserError(f"{source}: model.trunk: unknown trunk {config.model.trunk!r}; "
                        f"known: {', '.join(TRUNKS)}")
    if not 1 <= config.model.top_k <= config.model.routed_experts:
        raise UserError(f"{source}: model.top_k: must be between 1 and model.routed_experts")
    if config.model.embedding_dim % config.model.num_heads:
        raise UserError(f"{source}: model.embedding_dim must be a multiple of model.num_heads")
    buckets = config.evaluation.length_buckets
    if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets) or \
            list(buckets) != sorted(set(buckets)):
        raise UserError(f"{source}: evaluation.length_buckets: expected increasing positive token "
                        f"counts, got {list(buckets)}")
    _check_tuning(config, source)
    for field, choices in (("loss_weighting", LOSS_WEIGHTINGS),
                           ("learning_rate_schedule", LEARNING_RATE_SCHEDULES),
                           ("distribution", DISTRIBUTIONS), ("tagging_loss", TAGGING_LOSSES)):
        value = getattr(config.training, field)
        if value not in choices:
            raise UserError(f"{source}: training.{field}: expected one of {', '.join(choices)}, "
                            f"got {value!r}")
    if config.cluster.workers < 1:
        raise UserError(f"{source}: cluster.workers: must be >= 1 (the chief included)")
    if config.cluster.workers > 1 and config.training.distribution != "multi_worker":
        raise UserError(f"{source}: cluster.workers is {config.cluster.workers}: set "
                        "training.distribution to multi_worker, or cluster.workers to 1")
    if config.training.warm_start_epochs < 1:
        raise UserError(f"{source}: training.warm_start_epochs: must be >= 1")
    if not 0.0 <= config.training.word_dropout < 1.0:
        raise UserError(f"{source}: training.word_dropout: a probability in [0, 1), got "
                        f"{config.training.word_dropout}")
    if config.training.patience < 0:
        raise UserError(f"{source}: training.patience: must be >= 0 (0 = never stop early)")
    if config.spans.window < 0:
        raise UserError(f"{source}: spans.window: must be >= 0 (0 = every span)")
    for name in ("max_label_drift", "max_split_skew"):
        if not 0.0 <= getattr(config.validation, name) <= 1.0:
            raise UserError(f"{source}: validation.{name}: an L-infinity distance between 0 and 1")
    _check_beam(config.pipeline, source)
    if config.training.mixed_precision not in ("auto", "float32", "mixed_float16", "mixed_bfloat16"):
        raise UserError(f"{source}: training.mixed_precision: unknown policy "
                        f"{config.training.mixed_precision!r}")
    return config


def _check_beam(pipeline: PipelineConfig, source: str) -> None:
    if pipeline.beam_runner not in BEAM_RUNNER_OPTIONS:
        raise UserError(f"{source}: pipeline.beam_runner: expected one of "
                        f"{', '.join(BEAM_RUNNER_OPTIONS)}, got {pipeline.beam_runner!r}")
    missing = [o for o in BEAM_RUNNER_OPTIONS[pipeline.beam_runner] if o not in pipeline.beam_options]
    if missing:
        raise UserError(f"{source}: pipeline.beam_options: the {pipeline.beam_runner} runner needs "
                        f"{', '.join(missing)}")


def _check_tuning(config: Config, source: str) -> None:
    tuning, where = config.tuning, f"{source}: tuning"

    def numbers(name, kind, count=None):
        values = getattr(tuning, name)
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        if kind is int:
            ok = ok and all(isinstance(v, int) for v in values)
        if count is not None:
            ok = ok and (not values or (len(values) == count and values[0] < values[1]))
        if not ok:
            shape = "[low, high] with 0 < low < high" if count else "positive integers"
            raise UserError(f"{where}.{name}: expected {shape}, got {list(values)}")

    if tuning.algorithm not in TUNING_ALGORITHMS:
        raise UserError(f"{where}.algorithm: expected one of {', '.join(TUNING_ALGORITHMS)}, "
                        f"got {tuning.algorithm!r}")
    if tuning.max_trials < 1 or tuning.epochs_per_trial < 1 or tuning.budget_minutes < 0:
        raise UserError(f"{where}: max_trials and epochs_per_trial must be >= 1, budget_minutes >= 0")
    if not tuning.loss_weight_range:
        raise UserError(f"{where}.loss_weight_range: expected [low, high] with 0 < low < high, got []")
    numbers("loss_weight_range", float, 2)
    numbers("learning_rate_range", float, 2)
    numbers("top_k_choices", int)
    numbers("routed_experts_choices", int)
    if (tuning.top_k_choices or tuning.routed_experts_choices) and config.model.trunk != "deepseek_moe":
        raise UserError(f"{where}: top_k_choices / routed_experts_choices need model.trunk deepseek_moe")
    names = {t.name for t in config.tasks}
    for task, weight in tuning.objective_weights.items():
        if task not in names or not isinstance(weight, (int, float)) or weight < 0:
            raise UserError(f"{where}.objective_weights: {task!r}: expected a task name with a "
                            f"weight >= 0; tasks: {', '.join(sorted(names))}")
    if tuning.objective_weights and not sum(tuning.objective_weights.values()) > 0:
        raise UserError(f"{where}.objective_weights: at least one weight must be > 0")
