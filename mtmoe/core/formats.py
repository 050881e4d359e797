"""Input formats -> tf.Example TFRecords under `<out>/span-<N>/<split>/`.

Every record becomes one tf.Example with a `text` feature (tokens joined by single spaces, so the
pipeline's whitespace tokenizer gives back exactly the tokens the tags are aligned with) and one
feature per label field. A label field that a record lacks is left out of its tf.Example: the
example is then unlabelled for that task and still trains the others. Tag fields are checked as BIO
(`BioCheck`) by every reader.
"""
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from mtmoe.core.config import TOKEN_TAGGING
from mtmoe.core.errors import UserError

SPLITS = ("train", "eval", "test")
_SPLIT_NAMES = {"train": "train", "eval": "eval", "dev": "eval", "valid": "eval", "test": "test"}
_SPAN_DIR = re.compile(r"^span-(\d+)$")
# In a span folder, beside its splits: a fingerprint of the records it was written from, so that
# converting the same data again is caught (each convert adds a span: it would train twice on it).
SOURCE_FILE = "source.json"
FORMATS = ("jsonl", "slu", "conll")
BIO_MODES = ("reject", "fix")
_TAG = re.compile(r"O|[BI]-\S+")

Value = Union[str, List[str]]
Record = Dict[str, Value]


def split_files(in_dir: str, pattern: str) -> Dict[str, str]:
    """Maps each split to the one file or folder in `in_dir` named like it (dev counts as eval)."""
    if not os.path.isdir(in_dir):
        raise UserError(f"{in_dir}: input directory not found")
    found: Dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(in_dir, pattern))):
        stem = os.path.basename(path).split(".")[0]
        split = _SPLIT_NAMES.get(stem)
        if split is None:
            continue
        if split in found:
            raise UserError(f"{in_dir}: both {found[split]} and {path} would be the {split} split")
        found[split] = path
    missing = [s for s in SPLITS if s not in found]
    if missing:
        raise UserError(f"{in_dir}: no {' / '.join(missing)} split found "
                        f"(expected {pattern.replace('*', '{train,dev|eval,test}')})")
    return found


def _read_lines(path: str) -> List[str]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#x})") from None
    # Lines end at "\n" only: str.splitlines would also end one inside a JSON string at U+2028, U+2029
    # or U+0085, which json.dumps(..., ensure_ascii=False) writes as they are.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _check_tokens(tokens: Sequence[str], tags: Sequence[str], where: str, field: str) -> None:
    if len(tokens) != len(tags):
        raise UserError(f"{where}: field '{field}' has {len(tags)} tags for {len(tokens)} tokens")


@dataclasses.dataclass
class BioCheck:
    """Checks one split's BIO tags (JSONL tag lists, SLU seq.out, CoNLL tags) as the readers read them.

    A tag is `O`, `B-<type>` or `I-<type>`; anything else stops the conversion in either mode, since
    no rule can tell what it meant. An `I-x` continues a `B-x` or `I-x`; one that opens a span instead
    (first, after `O` or after another type) stops the conversion under mode "reject", and under "fix"
    becomes `B-x`: conlleval and the span metrics read it as the start of a span already, so the spans
    the data means stay the same. `fixed` counts the tags rewritten, for the convert command to report.
    """

    mode: str = "reject"
    fixed: int = 0

    def __call__(self, tags: Sequence[str], where: str, field: str) -> List[str]:
        checked: List[str] = []
        for index, tag in enumerate(tags, start=1):
            if not _TAG.fullmatch(tag):
                raise UserError(f"{where}: field '{field}': invalid tag at token {index} ({tag!r}); "
                                f"tags are O, B-<type> or I-<type>")
            previous = checked[-1] if checked else "O"
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                if self.mode != "fix":
                    after = f"after {previous!r}" if checked else "at the start"
                    raise UserError(f"{where}: field '{field}': invalid BIO at token {index} "
                                    f"({tag!r} {after}); fix it, or convert with --bio fix")
                tag = "B-" + tag[2:]
                self.fixed += 1
            checked.append(tag)
        return checked


def _make_record(text_tokens: Sequence[str], where: str) -> Record:
    if not text_tokens:
        raise UserError(f"{where}: empty text")
    return {"text": " ".join(text_tokens)}


def jsonl_objects(path: str) -> Iterator[Tuple[str, dict]]:
    """(`path:line`, object) of each non-blank line; a line that is not a JSON object (or not
    UTF-8) stops with its file and line."""
    for number, line in enumerate(_read_lines(path), start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: each line must be a JSON object")
        yield where, obj


def read_jsonl(path: str, tag_fields: Sequence[str], label_fields: Sequence[str], bio: BioCheck,
               single_label_fields: Sequence[str] = ()) -> Iterator[Record]:
    """`{"text": str, "tokens": [str]?, <label field>: str | [str]}` per line.

    A single-label field (a classification task's) must be a string: the pipeline would keep only the
    first label of a list.
    """
    allowed = {"text", "tokens", *label_fields}
    for where, obj in jsonl_objects(path):
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                            f"the config's label fields are {', '.join(label_fields)}")
        tokens = obj.get("tokens")
        if tokens is None:
            text = obj.get("text")
            if not isinstance(text, str):
                raise UserError(f"{where}: field 'text' must be a string")
            tokens = text.split()
        elif not (isinstance(tokens, list) and all(isinstance(t, str) and t and not any(
                c.isspace() for c in t) for t in tokens)):
            raise UserError(f"{where}: field 'tokens' must be a list of non-empty strings without spaces")
        record = _make_record(tokens, where)
        for field in label_fields:
            if field not in obj or obj[field] is None:
                continue
            value = obj[field]
            if isinstance(value, list):
                if field in single_label_fields:
                    raise UserError(f"{where}: field '{field}' must be one label (a non-empty "
                                    f"string), not a list")
                if not all(isinstance(v, str) and v for v in value):
                    raise UserError(f"{where}: field '{field}' must hold non-empty strings")
                if field in tag_fields:
                    _check_tokens(tokens, value, where, field)
                    value = bio(value, where, field)
            elif not isinstance(value, str) or not value:
                raise UserError(f"{where}: field '{field}' must be a non-empty string or a list of them")
            elif field in tag_fields:
                raise UserError(f"{where}: field '{field}' must be a list of tags, one per token")
            record[field] = value
        yield record


def read_slu(split_dir: str, label_field: str, tags_field: str, bio: BioCheck) -> Iterator[Record]:
    """SNIPS/ATIS layout: `seq.in` tokens, `seq.out` BIO tags, `label` sentence label, line by line."""
    paths = {name: os.path.join(split_dir, name) for name in ("seq.in", "seq.out", "label")}
    for path in paths.values():
        if not os.path.isfile(path):
            raise UserError(f"{path}: file not found")
    lines = {name: _read_lines(path) for name, path in paths.items()}
    counts = {name: len(v) for name, v in lines.items()}
    if len(set(counts.values())) != 1:
        raise UserError(f"{split_dir}: seq.in, seq.out and label have different line counts {counts}")
    for number, (text, tags, label) in enumerate(
            zip(lines["seq.in"], lines["seq.out"], lines["label"]), start=1):
        where = f"{paths['seq.in']}:{number}"
        tokens = text.split()
        record = _make_record(tokens, where)
        tag_list = tags.split()
        if len(tag_list) != len(tokens):
            raise UserError(f"{paths['seq.out']}:{number}: {len(tag_list)} tags for "
                            f"{len(tokens)} tokens in seq.in")
        record[tags_field] = bio(tag_list, f"{paths['seq.out']}:{number}", tags_field)
        if not label.strip():
            raise UserError(f"{paths['label']}:{number}: empty label")
        record[label_field] = label.strip()
        yield record


def read_conll(path: str, tags_field: str, bio: BioCheck) -> Iterator[Record]:
    """`token<TAB>tag` per line, a blank line between sequences (errors name its first line)."""
    tokens: List[str] = []
    tags: List[str] = []
    start = 1
    for number, line in enumerate(_read_lines(path) + [""], start=1):
        if not line.strip():
            if tokens:
                record = _make_record(tokens, f"{path}:{start}")
                record[tags_field] = bio(tags, f"{path}:{start}", tags_field)
                yield record
            tokens, tags, start = [], [], number + 1
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise UserError(f"{path}:{number}: expected 'token<TAB>tag', got {line!r}")
        if any(c.isspace() for c in parts[0].strip()):
            raise UserError(f"{path}:{number}: token {parts[0]!r} contains whitespace")
        tokens.append(parts[0].strip())
        tags.append(parts[1].strip())


def to_tf_example(record: Record) -> bytes:
    import tensorflow as tf

    feature = {}
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        feature[key] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def existing_spans(data_root: str) -> List[int]:
    if not os.path.isdir(data_root):
        return []
    return sorted(int(m.group(1)) for m in map(_SPAN_DIR.match, os.listdir(data_root)) if m)


def read_splits(fmt: str, in_dir: str, label_fields: Sequence[str], tag_fields: Sequence[str],
                label_field: str = "intent", tags_field: str = "slots",
                bio: Optional[Dict[str, BioCheck]] = None, single_label_fields: Sequence[str] = ()
                ) -> Dict[str, Iterable[Record]]:
    """Each split's records, read while write_span writes them, so bad data stops before a span
    appears. `bio` holds each split's BioCheck (default: reject invalid BIO); its counts are complete
    once the span is written."""
    bio = bio or {split: BioCheck() for split in SPLITS}
    if fmt == "jsonl":
        files = split_files(in_dir, "*.jsonl")
        return {s: read_jsonl(p, tag_fields, label_fields, bio[s], single_label_fields)
                for s, p in files.items()}
    if fmt == "slu":
        dirs = split_files(in_dir, "*")
        return {s: read_slu(p, label_field, tags_field, bio[s]) for s, p in dirs.items()}
    if fmt == "conll":
        files = split_files(in_dir, "*.conll")
        return {s: read_conll(p, tags_field, bio[s]) for s, p in files.items()}
    raise UserError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


class RecordsFingerprint:
    """A hash of the records of every split, in order, whatever format they were read from."""

    def __init__(self):
        self._hash = hashlib.sha256()

    def add(self, split: str, records: Iterable[Record]) -> None:
        self._hash.update(split.encode())
        for record in records:
            self._hash.update(json.dumps(record, sort_keys=True).encode() + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def span_with_source(data_root: str, fingerprint: str) -> Optional[int]:
    """The existing span written from records with this fingerprint, if any."""
    for span in existing_spans(data_root):
        try:
            with open(os.path.join(data_root, f"span-{span}", SOURCE_FILE)) as f:
                if json.load(f).get("records_sha256") == fingerprint:
                    return span
        except (FileNotFoundError, ValueError):
            continue  # a span from before the file, or one written by hand
    return None


def write_span(splits: Dict[str, Iterable[Record]], data_root: str, span: int = 0,
               fingerprint: str = "") -> Tuple[str, Dict[str, int]]:
    """Writes a new span folder atomically: all of it appears, or none of it. Returns (path, counts).
    `fingerprint` (a RecordsFingerprint's) is kept in the span's SOURCE_FILE."""
    import tensorflow as tf

    span = span or (max(existing_spans(data_root), default=0) + 1)
    final = os.path.join(data_root, f"span-{span}")
    if os.path.exists(final):
        raise UserError(f"{final}: span {span} already exists; spans are never overwritten")
    os.makedirs(data_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".span-{span}-", dir=data_root)
    counts = {}
    try:
        if fingerprint:
            with open(os.path.join(staging, SOURCE_FILE), "w") as f:
                json.dump({"records_sha256": fingerprint}, f)
        for split in SPLITS:
            os.makedirs(os.path.join(staging, split))
            path = os.path.join(staging, split, "data.tfrecord.gz")
            n = 0
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for record in splits[split]:
                    writer.write(to_tf_example(record))
                    n += 1
            if n == 0:
                raise UserError(f"the {split} split has no examples")
            counts[split] = n
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final, counts


def read_span_records(split_dir: str) -> Iterator[Tuple[str, Dict[str, List[bytes]]]]:
    """Yields (file, {feature: values}) for every tf.Example in a split folder."""
    import tensorflow as tf

    for path in sorted(glob.glob(os.path.join(split_dir, "*"))):
        compression = "GZIP" if path.endswith(".gz") else ""
        for raw in tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator():
            example = tf.train.Example.FromString(raw)
            yield path, {k: list(f.bytes_list.value) for k, f in example.features.feature.items()}


def check_latest_span(data_root: str, tasks) -> str:
    """Checks the span a run will read before anything runs; returns its folder.

    Fails when the data root or a split is missing or empty, when a task's label field never occurs in
    the train split, or when a token-tagging example has a different number of tags than tokens.
    """
    spans = existing_spans(data_root)
    if not spans:
        raise UserError(f"{data_root}: no span-<N> folders; create one with `mtmoe data convert` "
                        f"or `mtmoe data sample`")
    span_dir = os.path.join(data_root, f"span-{spans[-1]}")
    tag_fields = {t.label_field for t in tasks if t.type == TOKEN_TAGGING}
    seen = set()
    for split in SPLITS:
        split_dir = os.path.join(span_dir, split)
        if not glob.glob(os.path.join(split_dir, "*")):
            raise UserError(f"{split_dir}: split folder is missing or empty")
        if split != "train":
            continue
        for index, (path, features) in enumerate(read_span_records(split_dir), start=1):
            if not features.get("text"):
                raise UserError(f"{path}: record {index}: field 'text' is missing or empty")
            seen.update(features)
            tokens = features["text"][0].split()
            for field in tag_fields & set(features):
                _check_tokens(tokens, features[field], f"{path}: record {index}", field)
    for task in tasks:
        if task.label_field not in seen:
            raise UserError(f"{span_dir}/train: no example has field '{task.label_field}' "
                            f"(label of task '{task.name}'); fields present: {', '.join(sorted(seen))}")
    return span_dir
