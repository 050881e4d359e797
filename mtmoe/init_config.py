"""`mtmoe init`: a starting config read off a dataset, so that a new dataset goes from files to
`mtmoe run` without writing YAML by hand.

One task per label field, its type inferred from the training split's values: one string per example
is classification; a list of BIO tags as long as the tokens, token tagging; any other list,
multi-label. `text.max_tokens` is the 99th percentile of the training texts' token counts. The
thresholds stay permissive (min_value 0, max_drop 1): set them once a first run shows what the data
allows. The curated schema is written beside the config, from the whole dataset.
"""
import math
import os
import re
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np
import yaml

from mtmoe.core.config import CLASSIFICATION, MULTILABEL, TOKEN_TAGGING, load_config
from mtmoe.core.errors import UserError
from mtmoe.core.formats import jsonl_objects, read_splits, split_files, write_span

_BIO = re.compile(r"^(O|[BI]-\S+)$")
_NOT_A_NAME = re.compile(r"[^a-z0-9_]+")
MIN_MAX_TOKENS = 8


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


def infer(fmt: str, in_dir: str, label_field: str = "intent", tags_field: str = "slots"
          ) -> Tuple[dict, List[str]]:
    """(the config as a dict, one line per inference and its reason)."""
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
    splits = read_splits(fmt, in_dir, [t["label_field"] for t in tasks], tag_fields,
                         label_field, tags_field,
                         single_label_fields=[t["label_field"] for t in tasks
                                              if t["type"] == CLASSIFICATION])
    counts = {split: [len(record["text"].split()) for record in records]
              for split, records in splits.items()}
    train = np.array(counts["train"])
    max_tokens = max(MIN_MAX_TOKENS, math.ceil(float(np.percentile(train, 99))))
    lines.append(f"text.max_tokens: {max_tokens} (99th percentile of {len(train):,} training texts; "
                 f"longest {train.max()}, mean {train.mean():.1f})")
    return {"tasks": tasks, "text": {"max_tokens": max_tokens}}, lines


def write_config(fmt: str, in_dir: str, out: str, label_field: str = "intent",
                 tags_field: str = "slots") -> List[str]:
    """Writes the inferred config to `out` and its curated schema beside it (both, or neither);
    returns what was inferred and why."""
    from mtmoe.components.data_validation import update_schema

    if os.path.exists(out):
        raise UserError(f"{out}: already exists; choose another --out")
    config, lines = infer(fmt, in_dir, label_field, tags_field)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".mtmoe-init-", dir=folder)
    try:
        draft = os.path.join(staging, os.path.basename(out))
        with open(draft, "w") as f:
            f.write("# Written by `mtmoe init` from " + os.path.abspath(in_dir) + "; thresholds "
                    "(min_value, max_drop) are permissive until a first run shows what to ask.\n")
            yaml.safe_dump(config, f, sort_keys=False)
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
