"""The one config every stage reads: tasks, text settings, model, training and pipeline options.

A config is YAML (the default ships in mtmoe/configs/default.yaml). It becomes a frozen `Config`, a
tree of pydantic dataclasses that checks every field (strict types, ranges, choices, and the rules
across fields) wherever one is built, `dataclasses.replace` included; a bad field is one error line
naming the file and the field. The pipeline hands `Config.to_dict()` to Transform and Trainer as
`custom_config`, and they rebuild it with `Config.from_dict`, so every stage sees the same tasks in
the same order.
"""
import dataclasses
import os
import re
from importlib import resources
from typing import Annotated, Any, Dict, Literal, Optional, Tuple, Union

import yaml
from pydantic import (ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError,
                      field_validator, model_validator)
from pydantic.dataclasses import dataclass

from mtmoe.core.errors import UserError
from mtmoe.core.feature_names import RESERVED

DEFAULT_CONFIG = "default.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# Strict scalars: a YAML `yes` is no number and `5` no string; an int is accepted where a float goes.
Int, Float, Bool, Str = StrictInt, StrictFloat, StrictBool, StrictStr
AtLeast0 = Annotated[StrictInt, Field(ge=0)]
AtLeast1 = Annotated[StrictInt, Field(ge=1)]
_STRICT = ConfigDict(extra="forbid")

# The task types; mtmoe.core.tasks and mtmoe.trainer.heads implement each. Named here so that a
# config is checked without loading TensorFlow.
CLASSIFICATION, MULTILABEL, TOKEN_TAGGING = "classification", "multilabel", "token_tagging"
TASK_TYPE_NAMES = (CLASSIFICATION, MULTILABEL, TOKEN_TAGGING)
TRUNKS = ("dense", "mmoe", "deepseek_moe")
LOSS_WEIGHTINGS = ("fixed", "uncertainty")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
TAGGING_LOSSES = ("example_mean", "token_mean")
TUNING_ALGORITHMS = ("bayesian", "hyperband", "random")
MIXED_PRECISION = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# The options (pipeline.beam_options) each Beam runner cannot start without.
BEAM_RUNNER_OPTIONS = {"direct": (), "dataflow": ("project", "region", "temp_location"),
                       "flink": ("flink_master",), "spark": ("spark_master_url",)}


def _about(default, description: str):
    """A field's default and what it does: `mtmoe init` writes the description as the field's comment."""
    return Field(default, description=description)


def descriptions(section) -> Dict[str, str]:
    """{field: description} of a config section's class."""
    return {name: info.description or "" for name, info in section.__pydantic_fields__.items()}


@dataclass(frozen=True, config=_STRICT)
class TaskConfig:
    name: Str = Field(description="the model output's name (lower_snake_case)")
    type: Literal[TASK_TYPE_NAMES] = Field(
        description="what the task predicts: one label per text, a set of labels, or a tag per token")
    label_field: Str = Field(description="the data field (tf.Example feature) holding the label")
    loss_weight: Annotated[Float, Field(ge=0)] = _about(1.0, "w_t in L = sum_t w_t L_t")
    min_value: Float = _about(0.0, "not blessed when the primary metric on eval is below this")
    max_drop: Float = _about(1.0, "nor when it is this far below the last blessed model's")
    max_labels: AtLeast1 = _about(8, "multilabel: the most labels one example may carry")
    out_of_scope_label: Str = _about(
        "", "classification: the label value of texts outside the task's classes (e.g. oos), "
            "trained as a class and answered as out of scope; \"\" = none")
    reject_below: Union[Annotated[Float, Field(ge=0, le=1)], Literal["auto", "off"]] = _about(
        "off", "classification: answer out of scope when the top in-scope (calibrated) probability "
               "is below this; auto = chosen on eval; off = never")
    rejected_in_scope: Annotated[Float, Field(gt=0, lt=1)] = _about(
        0.02, "reject_below auto, on an eval split without out-of-scope texts: the share of "
              "in-scope eval texts it rejects")

    @field_validator("reject_below", mode="before")
    @classmethod
    def _threshold_or_word(cls, value):
        """One clear error instead of one per member of the union."""
        if value in ("auto", "off") or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                        and 0 <= value <= 1):
            return value
        raise ValueError(f"expected a number in [0, 1], auto or off, got {value!r}")

    @model_validator(mode="after")
    def _out_of_scope_needs_classification(self):
        for field in ("out_of_scope_label", "reject_below"):
            if getattr(self, field) not in ("", "off") and self.type != CLASSIFICATION:
                raise ValueError(f"{field}: only a classification task answers out of scope "
                                 f"(this one is {self.type})")
        return self

    @property
    def answers_out_of_scope(self) -> bool:
        """Whether the task says which texts are outside its classes (an out-of-scope label, a
        rejection threshold, or both)."""
        return bool(self.out_of_scope_label) or self.reject_below != "off"

    @property
    def has_limit(self) -> bool:
        """Whether a model could fail the task's blessing limits (min_value, max_drop)."""
        return self.min_value > 0 or self.max_drop < 1

    @field_validator("name")
    @classmethod
    def _snake_case(cls, name):
        if not _NAME.match(name):
            raise ValueError(f"{name!r} must be lower_snake_case")
        return name

    @field_validator("name", "label_field")
    @classmethod
    def _not_reserved(cls, value):
        if value in RESERVED:
            raise ValueError(f"{value!r} is reserved for the input text")
        return value


@dataclass(frozen=True, config=_STRICT)
class TextConfig:
    max_tokens: AtLeast1 = _about(32, "pad / truncate every text to this many tokens")
    vocab_size: AtLeast1 = _about(20000, "most frequent tokens kept; the rest share one OOV id")
    max_chars: AtLeast0 = _about(12, "characters per token for the spelling encoder; 0 turns it off")


@dataclass(frozen=True, config=_STRICT)
class ModelConfig:
    """The defaults are the recipe measured best across the benchmark datasets (bench/README.md,
    "Defaults"); the sample config (default.yaml) sets a small model of its own."""
    trunk: Literal[TRUNKS] = _about("deepseek_moe", "feed-forward layer of each block: dense | mmoe | "
                                    "deepseek_moe")
    embedding_dim: AtLeast1 = _about(128, "model width: token embedding and every layer after it")
    char_dim: AtLeast1 = _about(16, "character embedding of the per-token spelling encoder")
    num_blocks: AtLeast0 = _about(1, "blocks of self-attention + the trunk's feed-forward layer, "
                                     "after the BiLSTMs")
    num_heads: AtLeast1 = _about(4, "attention heads (embedding_dim must be a multiple)")
    ff_dim: AtLeast1 = _about(256, "dense: feed-forward width; mmoe: width of each expert")
    num_experts: AtLeast1 = _about(4, "mmoe: experts shared by the per-task gates")
    shared_experts: AtLeast0 = _about(1, "deepseek_moe: always-on experts (K_s)")
    routed_experts: AtLeast1 = _about(8, "deepseek_moe: fine-grained routed experts (N_r)")
    top_k: AtLeast1 = _about(2, "deepseek_moe: routed experts per token")
    expert_dim: AtLeast1 = _about(64, "deepseek_moe: width of each expert")
    capacity_factor: Annotated[Float, Field(gt=0)] = _about(
        1.25, "expert buffers hold tokens * top_k / routed_experts * this")
    dense_dispatch: Bool = _about(False, "true: every expert on every token (the slow reference)")
    balance_alpha: Annotated[Float, Field(ge=0)] = _about(0.01, "weight of the expert balance loss")
    dropout: Annotated[Float, Field(ge=0, lt=1)] = _about(0.3, "dropout rate of every layer")
    recurrent: Bool = _about(True, "BiLSTMs on the embeddings, before the first block")
    recurrent_units: AtLeast0 = _about(
        0, "units of each LSTM; 0 = embedding_dim / 2 (wider ones are projected back)")
    # Deeper tagging encoders help sequence labelling beyond one dataset (Reimers & Gurevych 2017).
    recurrent_layers: AtLeast1 = _about(2, "stacked BiLSTMs when recurrent, each residual")
    tags_see_classes: Bool = _about(
        True, "token-tagging heads read the classification tasks' predicted classes at every token")
    token_level_classes: Bool = _about(
        False, "classification also predicted and trained at every token (Stack-Propagation's "
               "token-level intent; training only)")
    crf: Bool = _about(False, "token tagging with a linear-chain CRF and Viterbi decoding")
    word_vectors: Str = _about(
        "", "GloVe/fastText text file that starts the token embedding, relative to this file; "
            "\"\" = random")

    @model_validator(mode="after")
    def _consistent(self):
        if self.top_k > self.routed_experts:
            raise ValueError("top_k: must be between 1 and routed_experts")
        if self.embedding_dim % self.num_heads:
            raise ValueError("embedding_dim must be a multiple of num_heads")
        return self


@dataclass(frozen=True, config=_STRICT)
class TrainingConfig:
    """The defaults are the measured recipe (see ModelConfig); `mtmoe init` sets `epochs` from the
    data's size."""
    epochs: AtLeast1 = _about(20, "epochs from scratch; the best epoch on eval is kept")
    batch_size: AtLeast1 = _about(32, "texts per training step")
    learning_rate: Annotated[Float, Field(ge=0)] = _about(0.002, "AdamW's (starting) rate")
    learning_rate_schedule: Literal[LEARNING_RATE_SCHEDULES] = _about(
        "cosine", "constant | cosine: down half a cosine to ~0 at the last epoch")
    weight_decay: Annotated[Float, Field(ge=0)] = _about(0.004, "AdamW's weight decay")
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = _about(0.0, "of the classification losses")
    gradient_accumulation_steps: AtLeast1 = _about(1, "batches summed into one update")
    fgm_epsilon: Annotated[Float, Field(ge=0)] = _about(
        0.0, "> 0: adversarial training on the token embeddings (FGM); about 2x an epoch's time")
    fgm_every: AtLeast1 = _about(1, "FGM on every k-th step only (about 1 + 1/k times a step's cost)")
    ema_momentum: Annotated[Float, Field(ge=0, lt=1)] = _about(
        0.0, "> 0: validation, the kept epoch and the export use a moving average of the weights")
    seed: Int = _about(42, "initialisation, shuffling and dropout")
    mixed_precision: Literal[MIXED_PRECISION] = _about(
        "auto", "auto: mixed_float16 when a GPU is visible; float32 | mixed_float16 | mixed_bfloat16")
    loss_weighting: Literal[LOSS_WEIGHTINGS] = _about(
        "fixed", "fixed: the tasks' loss_weight (or the Tuner's); uncertainty: learned")
    warm_start: Bool = _about(True, "start from the latest blessed model when it is compatible")
    warm_start_epochs: AtLeast1 = _about(3, "epochs of a warm-started training")
    patience: AtLeast0 = _about(
        0, "stop after this many epochs without a better val_objective; 0 = run every epoch")
    max_minutes: Annotated[Float, Field(ge=0)] = _about(
        0.0, "wall-clock safety limit: stop after the epoch that leaves no time for another, "
             "keeping the best so far; 0 = none")
    word_dropout: Annotated[Float, Field(ge=0, lt=1)] = _about(
        0.5, "chance that a token seen once in training becomes the OOV id in a step (its "
             "characters stay)")
    length_bucketing: Bool = _about(
        True, "training batches of texts of similar length: less padding, faster epochs on texts "
              "of uneven length")
    tagging_loss: Literal[TAGGING_LOSSES] = _about(
        "example_mean", "token tagging loss: per text, then over texts (example_mean), or over all "
                        "tokens (token_mean)")
    distribution: Literal[DISTRIBUTIONS] = _about(
        "none", "tf.distribute strategy: none | mirrored | multi_worker (TF_CONFIG)")


_Range = Annotated[Tuple[Annotated[Float, Field(gt=0)], ...], Field(max_length=2)]
_Choices = Tuple[AtLeast1, ...]


@dataclass(frozen=True, config=_STRICT)
class TuningConfig:
    enabled: Bool = _about(False, "true: the Tuner searches before the Trainer trains")
    algorithm: Literal[TUNING_ALGORITHMS] = _about("bayesian", "Keras Tuner's search")
    max_trials: AtLeast1 = _about(8, "trials of a search; raising it extends a finished one")
    epochs_per_trial: AtLeast1 = _about(3, "epochs each trial trains")
    budget_minutes: Annotated[Float, Field(ge=0)] = _about(
        0.0, "wall-clock limit, checked between trials; 0 = none")
    loss_weight_range: _Range = _about((0.1, 10.0), "[low, high] of each task's weight, log-uniform")
    learning_rate_range: _Range = _about((), "[low, high]: the learning rate is searched too, "
                                             "log-uniform; [] = not searched")
    top_k_choices: _Choices = _about((), "deepseek_moe: top_k values to search, e.g. [1, 2, 4]")
    routed_experts_choices: _Choices = _about(
        (), "deepseek_moe: routed_experts values to search, e.g. [4, 8, 16]")
    objective_weights: Dict[Str, Annotated[Float, Field(ge=0)]] = Field(
        default_factory=dict, description="{task: weight} of each task's primary metric in the "
                                          "objective; {} = the plain mean")
    seed: Int = _about(7, "the search's seed; change it to search again")

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("loss_weight_range", "learning_rate_range"):
            values = getattr(self, name)
            if (values or name == "loss_weight_range") and not (len(values) == 2 and values[0] < values[1]):
                raise ValueError(f"{name}: expected [low, high] with 0 < low < high, got {list(values)}")
        if self.objective_weights and not sum(self.objective_weights.values()) > 0:
            raise ValueError("objective_weights: at least one weight must be > 0")
        return self


@dataclass(frozen=True, config=_STRICT)
class EvaluationConfig:
    length_buckets: Tuple[AtLeast1, ...] = _about(
        (5, 10, 20), "token counts that bound the Evaluator's length slices: [5, 10, 20] -> <=5, "
                     "6-10, 11-20, >20")

    @field_validator("length_buckets")
    @classmethod
    def _increasing(cls, buckets):
        if list(buckets) != sorted(set(buckets)):
            raise ValueError(f"expected increasing positive token counts, got {list(buckets)}")
        return buckets


@dataclass(frozen=True, config=_STRICT)
class SpansConfig:
    window: AtLeast0 = _about(0, "train and evaluate on the newest N spans; 0 = every span")


RETRAIN_POLICIES = ("on_new_data", "on_decay")


@dataclass(frozen=True, config=_STRICT)
class ScheduleConfig:
    retrain: Literal[RETRAIN_POLICIES] = _about(
        "on_new_data", "on_new_data: every new span trains a model; on_decay: only a span on "
                       "which the serving model fails a task's min_value or max_drop")
    min_examples: AtLeast1 = _about(
        200, "on_decay: fewer labelled eval + test examples of a task in the new span than this "
             "cannot show that the serving model holds: the run trains")


_Distance = Annotated[Float, Field(ge=0, le=1)]  # L-infinity, between label distributions


@dataclass(frozen=True, config=_STRICT)
class ValidationConfig:
    schema: Str = _about("", "the curated schema (`mtmoe schema update` writes it), relative to "
                             "this file; \"\" = <config name>.schema.pbtxt beside it")
    max_label_drift: _Distance = _about(
        0.25, "largest L-infinity distance of a label's values, new span's train vs the previous span's")
    max_split_skew: _Distance = _about(
        0.25, "largest L-infinity distance of a label's values, new span's eval / test vs its train")


@dataclass(frozen=True, config=_STRICT)
class PipelineConfig:
    name: Str = _about("mtmoe", "the pipeline's name in ML Metadata")
    beam_runner: Literal[tuple(BEAM_RUNNER_OPTIONS)] = _about(
        "direct", "the Beam runner of ExampleGen, StatisticsGen, Transform and the Evaluator")
    beam_workers: AtLeast0 = _about(
        0, "direct: 0 = in-process for small input, else one worker per core; 1 = in-process; N workers")
    beam_options: Dict[Str, Any] = Field(
        default_factory=dict, description="the runner's own options, passed as --name=value: e.g. "
                                          "project, region, temp_location (dataflow)")

    @model_validator(mode="after")
    def _runner_options(self):
        missing = [o for o in BEAM_RUNNER_OPTIONS[self.beam_runner] if o not in self.beam_options]
        if missing:
            raise ValueError(f"beam_options: the {self.beam_runner} runner needs {', '.join(missing)}")
        return self


@dataclass(frozen=True, config=_STRICT)
class ClusterConfig:
    """A managed training job for the Trainer of a compiled Kubeflow v2 / Vertex AI pipeline
    (`mtmoe compile --target kubeflow-v2`); `mtmoe run` trains on this machine whatever it says."""
    project: Str = _about("", "Google Cloud project; \"\" = the Trainer runs in the pipeline's own step")
    region: Str = _about("us-central1", "the Vertex AI region")
    workers: AtLeast1 = _about(
        1, "machines, the chief included; > 1 needs training.distribution multi_worker")
    machine_type: Str = _about("n1-standard-4", "every worker's machine type")


@dataclass(frozen=True, config=_STRICT)
class Config:
    tasks: Annotated[Tuple[TaskConfig, ...], Field(min_length=1)]
    text: TextConfig = TextConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tuning: TuningConfig = TuningConfig()
    spans: SpansConfig = SpansConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    validation: ValidationConfig = ValidationConfig()
    pipeline: PipelineConfig = PipelineConfig()
    cluster: ClusterConfig = ClusterConfig()
    source: Str = "<dict>"

    @model_validator(mode="after")
    def _across_sections(self):
        for attr in ("name", "label_field"):
            seen = [getattr(t, attr) for t in self.tasks]
            dupes = sorted({v for v in seen if seen.count(v) > 1})
            if dupes:
                raise ValueError(f"tasks: duplicate {attr} {', '.join(dupes)}")
        tuning = self.tuning
        if (tuning.top_k_choices or tuning.routed_experts_choices) and self.model.trunk != "deepseek_moe":
            raise ValueError("tuning: top_k_choices / routed_experts_choices need model.trunk deepseek_moe")
        names = {t.name for t in self.tasks}
        unknown = sorted(set(tuning.objective_weights) - names)
        if unknown:
            raise ValueError(f"tuning.objective_weights: {unknown[0]!r}: expected a task name with a "
                             f"weight >= 0; tasks: {', '.join(sorted(names))}")
        if self.schedule.retrain == "on_decay" and not any(task.has_limit for task in self.tasks):
            raise ValueError("schedule.retrain is on_decay, but no task sets a limit the serving "
                             "model could fail: set tasks[i].min_value or tasks[i].max_drop")
        if self.cluster.workers > 1 and self.training.distribution != "multi_worker":
            raise ValueError(f"cluster.workers is {self.cluster.workers}: set "
                             "training.distribution to multi_worker, or cluster.workers to 1")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any], source: str = "<dict>") -> "Config":
        return _parse(raw, source)

    def with_overrides(self, **training) -> "Config":
        """The config with `training` fields replaced (command-line options); a bad value is a
        UserError naming the field."""
        try:
            return dataclasses.replace(self, training=dataclasses.replace(self.training, **training))
        except ValidationError as e:
            raise UserError(_first_error(e, f"{self.source}, as overridden", "training")) from None

    def with_loss_weights(self, weights: Dict[str, float]) -> "Config":
        return dataclasses.replace(self, tasks=tuple(
            dataclasses.replace(t, loss_weight=float(weights.get(t.name, t.loss_weight)))
            for t in self.tasks))


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.type)}


def load_config(path: Optional[str] = None) -> Config:
    """Reads a YAML config (the packaged default when `path` is None) and validates it."""
    if path is None:
        source = f"mtmoe/configs/{DEFAULT_CONFIG}"
        folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
        text = resources.files("mtmoe.configs").joinpath(DEFAULT_CONFIG).read_text()
    else:
        folder = os.path.dirname(os.path.abspath(path))
        source = str(path)
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


def _parse(raw: Dict[str, Any], source: str) -> Config:
    # An empty section in YAML (`model:`) reads as None: the defaults.
    values = {key: {} if value is None and key in _SECTIONS else value for key, value in raw.items()}
    values.setdefault("source", source)
    try:
        return Config(**values)
    except ValidationError as e:
        raise UserError(_first_error(e, source)) from None


_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")  # pydantic's kinds of unknown field


def _first_error(error: ValidationError, source: str, section: str = "") -> str:
    """The first of pydantic's errors as one line: the file, the field's path (within `section`
    when the error is a section's), what is wrong."""
    first = error.errors(include_url=False)[0]
    loc = ((section,) if section else ()) + tuple(first["loc"])
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    kind, message = first["type"], first["msg"]
    if kind in _UNKNOWN:
        owner = TaskConfig if loc[0] == "tasks" else _SECTIONS.get(loc[0]) if len(loc) > 1 else Config
        known = ", ".join(f.name for f in dataclasses.fields(owner) if f.name != "source")
        message = f"unknown field; known: {known}"
    elif kind in ("missing", "missing_argument"):
        message = "missing field"
        unknown = [e["loc"][-1] for e in error.errors(include_url=False)
                   if e["type"] in _UNKNOWN and tuple(e["loc"][:-1]) == tuple(first["loc"][:-1])]
        if unknown:  # most often a typo of it
            message += f" (beside it, unknown: {', '.join(map(str, unknown))})"
    elif kind == "value_error":  # our rules; one across a section's fields names the field first
        message = message.removeprefix("Value error, ")
        field = re.match(r"^([a-z_]+): ", message)
        if field and path:
            path, message = f"{path}.{field.group(1)}", message[field.end():]
    else:
        message += f", got {first['input']!r}"
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"
