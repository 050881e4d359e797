"""`mtmoe init`: a starting config read off a dataset, so that a new dataset goes from files to
`mtmoe run` without writing YAML by hand.

One task per label field, its type inferred from the training split's values: one string per example
is classification; a list of BIO tags as long as the tokens, token tagging; any other list,
multi-label. What the data decides is read off it, each with its reason, written as a comment:
`text.max_tokens` (the longest training text with a tagging task, else the 99th percentile of the
token counts), `text.max_chars`
(whether eval has tokens unseen in training), `training.epochs` (a token budget over the training
split's size) and each task's blessing thresholds (a margin over the best answer that ignores the
text, and a drop the eval split can tell from noise). Every other model and training field is
written with its default and what it does. The curated schema is written beside the config, from
the whole dataset.
"""
import dataclasses
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from typing import Any, Dict, List, Tuple

import numpy as np
import yaml

from mtmoe.core import metrics
from mtmoe.core.config import (CLASSIFICATION, MULTILABEL, TOKEN_TAGGING, ModelConfig, TextConfig,
                               TrainingConfig, descriptions, load_config)
from mtmoe.core.errors import UserError
from mtmoe.core.formats import jsonl_objects, read_splits, split_files, write_span

_BIO = re.compile(r"^(O|[BI]-\S+)$")
_NOT_A_NAME = re.compile(r"[^a-z0-9_]+")
MIN_MAX_TOKENS = 8
MAX_TAGGED_TOKENS = 128  # max_tokens with a token-tagging task: the longest text, up to this
# Blessing: min_value is this share of the way from the no-skill score to 1 (a model that learned
# little is not pushed); max_drop is two standard errors of a share on the eval split, in a range.
NO_SKILL_MARGIN = 0.25
MAX_DROP_RANGE = (0.01, 0.05)
MAX_CONSTANT_LABELS = 8  # multi-label no-skill: the best of the 1..8 most frequent labels
# Training length: about the token passes of the recipe on SNIPS (20 epochs of its 117,700
# training tokens), in epochs: each token seen about as often, at about the same compute.
TOKEN_PASSES = 2_350_000
EPOCHS_RANGE = (3, 100)
MAX_MINUTES = 60
# The spelling encoder, when at least this share of eval tokens is unseen in training.
MIN_UNSEEN_FOR_CHARS = 0.005
# Label values read as "outside the task's classes" without being told (CLINC150 uses `oos`).
OUT_OF_SCOPE_NAMES = ("oos", "out_of_scope", "out-of-scope")


def _jsonl_fields(path: str) -> Dict[str, list]:
    """{field: [(value, token count) of each training example that has it]} of a JSONL split."""
    fields: Dict[str, list] = {}
    for _, obj in jsonl_objects(path):
        tokens = obj.get("tokens") or str(obj.get("text", "")).split()
        for field, value in obj.items():
            if field not in ("text", "tokens") and value is not None:
                fields.setdefault(field, []).append((value, len(tokens)))
    return fields


def infer_type(values: list, where: str) -> Tuple[str, str]:
    """(task type, why) from a field's (value, token count) pairs; `where` names the field in an
    error."""
    if all(isinstance(v, str) for v, _ in values):
        return CLASSIFICATION, f"one label per example, {len({v for v, _ in values})} values"
    if all(isinstance(v, list) for v, _ in values):
        if all(len(v) == n and all(isinstance(t, str) and _BIO.match(t) for t in v)
               for v, n in values):
            kinds = {t[2:] for v, _ in values for t in v if t != "O"}
            return TOKEN_TAGGING, f"a BIO tag per token, {len(kinds)} span types"
        labels = {t for v, _ in values for t in v}
        return MULTILABEL, (f"lists of {min(len(v) for v, _ in values)}-"
                            f"{max(len(v) for v, _ in values)} labels, {len(labels)} values")
    raise UserError(f"{where}: values mix strings and lists; a label field holds one or the other")


def _task_name(field: str) -> str:
    name = _NOT_A_NAME.sub("_", field.lower()).strip("_")
    return name if name and name[0].isalpha() else f"task_{name}"


def infer(fmt: str, in_dir: str, label_field: str = "intent", tags_field: str = "slots",
          out_of_scope: str = "") -> Tuple[dict, List[str], Dict[str, Any]]:
    """(the config as a dict, one line per inference and its reason, {section: {field: why}} for
    the written file's comments). `out_of_scope`: the label value of out-of-scope texts, if the
    user named one."""
    if fmt == "jsonl":
        train = split_files(in_dir, "*.jsonl")["train"]
        fields = _jsonl_fields(train)
        if not fields:
            raise UserError(f"{train}: no label field besides 'text' and 'tokens'")
        found = {field: infer_type(values, f"{train}: field {field!r}")
                 for field, values in sorted(fields.items())}
    elif fmt == "slu":
        found = {label_field: (CLASSIFICATION, "the SLU `label` file"),
                 tags_field: (TOKEN_TAGGING, "the SLU `seq.out` file")}
    elif fmt == "conll":
        found = {tags_field: (TOKEN_TAGGING, "the CoNLL tag column")}
    else:
        raise UserError(f"unknown format {fmt!r}")
    tasks, lines = [], []
    for field, (kind, why) in found.items():
        task = {"name": _task_name(field), "type": kind, "label_field": field}
        if kind == MULTILABEL:
            task["max_labels"] = max(len(v) for v, _ in fields[field])
        tasks.append(task)
        lines.append(f"task {task['name']}: {kind} ({why})")
    tag_fields = [t["label_field"] for t in tasks if t["type"] == TOKEN_TAGGING]
    # Every split read as the pipeline will read it: bad data stops here, with its file and line.
    splits = {split: list(records) for split, records in read_splits(
        fmt, in_dir, [t["label_field"] for t in tasks], tag_fields, label_field, tags_field,
        single_label_fields=[t["label_field"] for t in tasks if t["type"] == CLASSIFICATION]
    ).items()}
    train, evaluation = splits["train"], splits.get("eval") or splits["train"]
    reasons: Dict[str, Any] = {"tasks": {}, "text": {}, "training": {}}
    for task in tasks:
        why = reasons["tasks"][task["name"]] = _thresholds(task, train, evaluation)
        lines.append(f"task {task['name']}: min_value {task['min_value']} ({why['min_value']}), "
                     f"max_drop {task['max_drop']} ({why['max_drop']})")
        if task["type"] == CLASSIFICATION:
            lines.append(_out_of_scope(task, train, out_of_scope, why))
    named = {t.get("out_of_scope_label") for t in tasks}
    if out_of_scope and out_of_scope not in named:
        raise UserError(f"--out-of-scope {out_of_scope}: no classification field of "
                        f"{in_dir}'s training split has this value")
    text, text_lines = _text_settings(train, evaluation, reasons["text"], tagging=bool(tag_fields))
    training, training_lines = _training_settings(train, reasons["training"])
    return ({"tasks": tasks, "text": text, "model": {}, "training": training},
            lines + text_lines + training_lines, reasons)


def no_skill(kind: str, train: List[Any], evaluation: List[Any]) -> float:
    """The primary metric on `evaluation` of the best answer that ignores the text, learned from
    `train`'s labels: the majority class (classification), the most frequent labels, as many as
    do best (multi-label), no span at all (token tagging). 0 without labelled eval texts."""
    if not evaluation:
        return 0.0
    if kind == CLASSIFICATION:
        majority = Counter(train).most_common(1)[0][0]
        return sum(label == majority for label in evaluation) / len(evaluation)
    if kind == TOKEN_TAGGING:
        return metrics.span_f1(evaluation, [["O"] * len(tags) for tags in evaluation])["f1"]
    ranked = [label for label, _ in Counter(l for labels in train for l in set(labels)).most_common()]
    best = 0.0
    for k in range(1, min(len(ranked), MAX_CONSTANT_LABELS) + 1):
        answer = set(ranked[:k])
        counts: Dict[str, float] = {}
        for labels in evaluation:
            metrics.add_counts(counts, {"tp": len(answer & set(labels)), "fp": len(answer - set(labels)),
                                        "fn": len(set(labels) - answer)})
        best = max(best, metrics.f1_from_counts(counts)["f1"])
    return best


def _thresholds(task: dict, train: List[dict], evaluation: List[dict]) -> Dict[str, str]:
    """Sets the task's blessing thresholds from its eval split; returns {field: why}."""
    field, kind = task["label_field"], task["type"]
    labelled = [r[field] for r in evaluation if field in r]
    baseline = no_skill(kind, [r[field] for r in train if field in r], labelled)
    task["min_value"] = round(baseline + NO_SKILL_MARGIN * (1 - baseline), 3)
    # The metric's unit: examples (classification), gold labels (multi-label), gold spans (tagging).
    units = (len(labelled) if kind == CLASSIFICATION else
             sum(len(set(labels)) for labels in labelled) if kind == MULTILABEL else
             sum(len(metrics.bio_spans(tags)) for tags in labelled))
    task["max_drop"] = round(min(MAX_DROP_RANGE[1], max(MAX_DROP_RANGE[0], 1 / math.sqrt(max(units, 1)))), 3)
    unit = {CLASSIFICATION: "texts", MULTILABEL: "labels", TOKEN_TAGGING: "spans"}[kind]
    return {"min_value": f"no-skill {baseline:.3f} on eval + {NO_SKILL_MARGIN:g} of the way to 1",
            "max_drop": f"2 standard errors of a share of {units:,} eval {unit}"}


def _out_of_scope(task: dict, train: List[dict], named: str, why: Dict[str, str]) -> str:
    """Sets how a classification task answers texts outside its classes: its out-of-scope label
    (the named one, or a conventional name) if the training split has it, and a rejection
    threshold chosen on eval after training; returns the line that says so."""
    counts = Counter(r[task["label_field"]] for r in train if task["label_field"] in r)
    label = named if named in counts else next(
        (value for value in counts if value.lower() in OUT_OF_SCOPE_NAMES), "")
    if label:
        task["out_of_scope_label"] = label
        why["out_of_scope_label"] = (f"{counts[label]:,} training texts{'' if label == named else ', by its name'}: "
                                     "trained as a class, answered as out of scope")
    task["reject_below"] = "auto"
    why["reject_below"] = ("chosen on eval for the best mean of in-scope accuracy and out-of-scope "
                           "recall" if label else "chosen on eval to reject 2% of its texts")
    return (f"task {task['name']}: out of scope when " + (f"labelled {label!r} or " if label else "")
            + f"its top probability is below a threshold {why['reject_below']}")


def _text_settings(train: List[dict], evaluation: List[dict], reasons: Dict[str, str],
                   tagging: bool):
    """`max_tokens`: with a token-tagging task the longest training text (a tag past it would be
    lost, and a batch costs only its own longest text), else the 99th percentile (a text's label
    rarely hangs on its tail); `max_chars`: see MIN_UNSEEN_FOR_CHARS."""
    counts = np.array([len(record["text"].split()) for record in train])
    if tagging:
        max_tokens = max(MIN_MAX_TOKENS, min(MAX_TAGGED_TOKENS, int(counts.max())))
        reasons["max_tokens"] = (f"the longest of {len(counts):,} training texts (at most "
                                 f"{MAX_TAGGED_TOKENS}): no tag is cut; mean {counts.mean():.1f}")
    else:
        max_tokens = max(MIN_MAX_TOKENS, math.ceil(float(np.percentile(counts, 99))))
        reasons["max_tokens"] = (f"99th percentile of {len(counts):,} training texts; longest "
                                 f"{counts.max()}, mean {counts.mean():.1f}")
    seen = Counter(token.lower() for record in train for token in record["text"].split())
    tokens = [token.lower() for record in evaluation for token in record["text"].split()]
    unseen = sum(token not in seen for token in tokens) / max(len(tokens), 1)
    max_chars = TextConfig().max_chars if unseen >= MIN_UNSEEN_FOR_CHARS else 0
    reasons["max_chars"] = (f"{100 * unseen:.1f}% of eval tokens are unseen in training: "
                            + ("the spelling encoder reads them" if max_chars else
                               "too few for the spelling encoder to be worth its time"))
    return ({"max_tokens": max_tokens, "max_chars": max_chars},
            [f"text.max_tokens: {max_tokens} ({reasons['max_tokens']})",
             f"text.max_chars: {max_chars} ({reasons['max_chars']})"])


def epochs_for(tokens: int) -> int:
    """Epochs that pass about TOKEN_PASSES training tokens (the recipe's on SNIPS), within
    EPOCHS_RANGE: a small training split gets more passes, a large one fewer, at about the same
    compute. Measured on dev: NLU++ (20,248 tokens) kept its 52nd of 60 epochs and gained 0.12
    over 20; MixSNIPS (123,958) kept its 10th of 20 (bench/README.md)."""
    return min(EPOCHS_RANGE[1], max(EPOCHS_RANGE[0], round(TOKEN_PASSES / max(tokens, 1))))


def _training_settings(train: List[dict], reasons: Dict[str, str]):
    batch_size = TrainingConfig().batch_size
    tokens = sum(len(record["text"].split()) for record in train)
    epochs = epochs_for(tokens)
    reasons["epochs"] = (f"about {TOKEN_PASSES / 1e6:g}M token passes, the recipe's on SNIPS "
                         f"({len(train):,} training texts of {tokens:,} tokens), within "
                         f"{EPOCHS_RANGE[0]}-{EPOCHS_RANGE[1]} epochs")
    reasons["batch_size"] = "the recipe's (measured on 2,000-15,000 training texts)"
    reasons["max_minutes"] = "a safety net: a slower machine stops at the best epoch so far"
    return ({"epochs": epochs, "batch_size": batch_size, "max_minutes": MAX_MINUTES},
            [f"training.epochs: {epochs} ({reasons['epochs']})",
             f"training.max_minutes: {MAX_MINUTES:g} ({reasons['max_minutes']})"])


def config_text(config: dict, reasons: Dict[str, Any], source: str) -> str:
    """The config as YAML, each chosen value with its reason and every model and training field
    with its default's description, as comments."""
    def value(v):
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("...").strip()

    def line(indent, key, v, comment):
        text = f"{indent}{key}: {value(v)}"
        return f"{text:<34} # {comment}" if comment else text

    out = [f"# Written by `mtmoe init` from {source}.",
           "# Each value below was read off the data (the comment says how) or is the built-in default",
           "# (the recipe measured on the benchmark datasets); edit any of them.", "", "tasks:"]
    for task in config["tasks"]:
        out.append(f"  - name: {task['name']}")
        for key, v in task.items():
            if key != "name":
                out.append(line("    ", key, v, reasons["tasks"][task["name"]].get(key, "")))
    for section, cls in (("text", TextConfig), ("model", ModelConfig), ("training", TrainingConfig)):
        out += ["", f"{section}:"]
        chosen, about = config.get(section, {}), descriptions(cls)
        for field in dataclasses.fields(cls):
            name = field.name
            if name in chosen:
                out.append(line("  ", name, chosen[name], reasons.get(section, {}).get(name, about[name])))
            else:
                out.append(line("  ", name, getattr(cls(), name), about[name]))
    return "\n".join(out) + "\n"


def write_config(fmt: str, in_dir: str, out: str, label_field: str = "intent",
                 tags_field: str = "slots", out_of_scope: str = "") -> List[str]:
    """Writes the inferred config to `out` and its curated schema beside it (both, or neither);
    returns what was inferred and why."""
    if os.path.exists(out):
        raise UserError(f"{out}: already exists; choose another --out")
    config, lines, reasons = infer(fmt, in_dir, label_field, tags_field, out_of_scope)
    # TensorFlow (TFDV) loads only once the data has been read and found good.
    from mtmoe.components.data_validation import update_schema

    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".mtmoe-init-", dir=folder)
    try:
        draft = os.path.join(staging, os.path.basename(out))
        with open(draft, "w") as f:
            f.write(config_text(config, reasons, os.path.abspath(in_dir)))
        loaded = load_config(draft)
        span_dir, _ = write_span(read_splits(fmt, in_dir, [t.label_field for t in loaded.tasks],
                                             [t.label_field for t in loaded.tasks
                                              if t.type == TOKEN_TAGGING], label_field, tags_field),
                                 os.path.join(staging, "data"))
        update_schema(loaded.validation.schema, span_dir, [t.label_field for t in loaded.tasks])
        schema = os.path.join(folder, os.path.basename(loaded.validation.schema))
        if os.path.exists(schema):
            raise UserError(f"{schema}: already exists; choose another --out")
        os.replace(loaded.validation.schema, schema)
        os.replace(draft, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return lines + [f"wrote {out} and its schema {schema}"]
