"""Data validation that stops a bad span before Transform: the curated schema and the data gate.

The schema is curated once from data (`mtmoe schema update`), checked in next to the config and
loaded by ImportSchemaGen: the text is required, every label field has its domain of values, and
TFDV's inferred presence and value counts stay. ExampleValidator checks each split of the new span
against it. The DataGate then adds two comparisons on the label fields, with the config's
thresholds (L-infinity distance between value distributions):
- drift: the new span's train split against the train split of the last span that passed the gate;
- skew: the new span's eval and test splits against its own train split (what the model is judged
  on against what it learns from: a mis-split or mislabelled split shows here).
Any anomaly stops the run (a UserError naming split, field and anomaly) unless the run allows them;
Transform depends on the gate, so nothing is trained and nothing is pushed. A span that passes (or is
allowed) becomes the reference for the next run's drift check: the gate copies its statistics out.
"""
import glob
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx.components.example_gen.utils import SPAN_PROPERTY_NAME
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from mtmoe.core.console import warn
from mtmoe.core.errors import UserError
from mtmoe.core.feature_names import TEXT
from mtmoe.core.file_names import GATE_FILE
from mtmoe.core.formats import SPLITS

DATA_GATE = "DataGate"               # the gate's node id
STATISTICS_FILE = "FeatureStats.pb"  # StatisticsGen's file in each Split-<name> folder
ANOMALIES_FILE = "SchemaDiff.pb"     # ExampleValidator's
TRAIN, COMPARED_SPLITS = "train", ("eval", "test")
# Label values a schema may list: far more than any label set here, so that TFDV's inference (100 by
# default) never leaves a large tag set without a domain.
_MAX_LABEL_DOMAIN = 10000


def split_files(uri: Optional[str], name: str) -> Dict[str, str]:
    """{split: path of `name` in its Split-<split> folder}, in the order of SPLITS."""
    if uri is None:
        return {}
    found = {os.path.basename(os.path.dirname(path))[len("Split-"):]: path
             for path in glob.glob(os.path.join(uri, "Split-*", name))}
    return {split: found[split] for split in SPLITS if split in found}


def anomaly_lines(anomalies: anomalies_pb2.Anomalies) -> List[str]:
    """One line per anomaly reason: field, what is wrong, and TFDV's detail (values, fractions)."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = info.reason or [info]
        lines += [f"{feature}: {reason.short_description}: {reason.description}".rstrip()
                  for reason in reasons]
    if anomalies.HasField("dataset_anomaly_info"):
        lines += [f"(dataset): {reason.short_description}: {reason.description}".rstrip()
                  for reason in anomalies.dataset_anomaly_info.reason]
    return lines


def read_anomalies(uri: Optional[str]) -> Dict[str, List[str]]:
    """ExampleValidator's anomalies, {split: [line]}."""
    found = {}
    for split, path in split_files(uri, ANOMALIES_FILE).items():
        with open(path, "rb") as f:
            found[split] = anomaly_lines(anomalies_pb2.Anomalies.FromString(f.read()))
    return found


def read_statistics(uri: Optional[str]) -> Dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """StatisticsGen's statistics, {split: statistics}."""
    found = {}
    for split, path in split_files(uri, STATISTICS_FILE).items():
        with open(path, "rb") as f:
            found[split] = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    return found


def curate_schema(statistics: statistics_pb2.DatasetFeatureStatisticsList,
                  label_fields: Sequence[str]) -> schema_pb2.Schema:
    """TFDV's inferred schema with the text required and free (no value domain) and a domain of
    values for every label field present in the data; a label field never seen is an error.

    Label fields get no fixed shape: a label missing from an example is an anomaly (its presence
    stays as inferred), and a run that allows it still parses the example (as unlabelled)."""
    import tensorflow_data_validation as tfdv

    schema = tfdv.infer_schema(statistics, infer_feature_shape=True,
                               max_string_domain_size=_MAX_LABEL_DOMAIN)
    names = {feature.name for feature in schema.feature}
    missing = [field for field in (TEXT, *label_fields) if field not in names]
    if missing:
        raise UserError(f"no example has field(s) {', '.join(missing)}: the schema cannot declare "
                        "them; check the data or the config's label fields")
    text = tfdv.get_feature(schema, TEXT)
    text.ClearField("domain")
    text.presence.min_fraction = 1.0
    text.presence.min_count = 1
    unlabelled = [field for field in label_fields
                  if not tfdv.get_feature(schema, field).HasField("domain")]
    if unlabelled:
        raise UserError(f"label field(s) {', '.join(unlabelled)} have no value domain (not string "
                        "labels?)")
    for field in label_fields:
        tfdv.get_feature(schema, field).ClearField("shape")
    kept = {TEXT, *label_fields}
    for feature in list(schema.feature):
        if feature.name not in kept:
            schema.feature.remove(feature)
    used = {feature.domain for feature in schema.feature}
    for domain in list(schema.string_domain):
        if domain.name not in used:
            schema.string_domain.remove(domain)
    return schema


def update_schema(schema_path: str, span_dir: str, label_fields: Sequence[str]) -> List[str]:
    """Curates a schema from every split of one span and writes it to `schema_path` (whole or not at
    all); returns what it declares, with the label values added or removed since the old file."""
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    files = os.path.join(span_dir, "*", "*")
    statistics = tfdv.generate_statistics_from_tfrecord(
        files, pipeline_options=PipelineOptions(["--direct_running_mode=in_memory"]))
    schema = curate_schema(statistics, label_fields)
    old = tfdv.load_schema_text(schema_path) if os.path.isfile(schema_path) else None
    lines = [f"{TEXT}: required, free text"]
    for field in label_fields:
        values = set(tfdv.get_domain(schema, field).value)
        line = f"{field}: {len(values)} values"
        if old is not None and field in {f.name for f in old.feature}:
            before = set(tfdv.get_domain(old, field).value)
            changes = [f"+{v}" for v in sorted(values - before)] + [f"-{v}" for v in sorted(before - values)]
            line += f" ({', '.join(changes) if changes else 'unchanged'})"
        lines.append(line)
    with open(schema_path + ".tmp", "w") as f:
        f.write(f"# Curated by `mtmoe schema update` from {os.path.basename(span_dir)}: the text is "
                "required, each label field lists its values.\n# Review changes before committing; "
                "every run's new span is validated against this file.\n")
        f.write(text_format.MessageToString(schema))
    os.replace(schema_path + ".tmp", schema_path)
    return lines


def compare_labels(statistics: Dict[str, statistics_pb2.DatasetFeatureStatisticsList],
                   previous_train: Optional[statistics_pb2.DatasetFeatureStatisticsList],
                   schema: schema_pb2.Schema, label_fields: Sequence[str],
                   max_drift: float, max_skew: float) -> Dict[str, List[str]]:
    """Drift and skew anomalies of the label fields, {what was compared: [line]}."""
    import tensorflow_data_validation as tfdv

    comparing = schema_pb2.Schema()
    comparing.CopyFrom(schema)
    for field in label_fields:
        feature = tfdv.get_feature(comparing, field)
        feature.drift_comparator.infinity_norm.threshold = max_drift
        feature.skew_comparator.infinity_norm.threshold = max_skew
    found = {}
    comparisons = [(f"{split} vs train (skew)", {"serving_statistics": statistics[split]})
                   for split in COMPARED_SPLITS if split in statistics]
    if previous_train is not None:
        comparisons.insert(0, ("train vs the previous span's train (drift)",
                               {"previous_statistics": previous_train}))
    comparator_types = {anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH}
    for name, other in comparisons:
        anomalies = tfdv.validate_statistics(statistics[TRAIN], comparing, **other)
        for feature, info in list(anomalies.anomaly_info.items()):
            # Schema anomalies come up here too: they are ExampleValidator's to report.
            compared = [reason for reason in info.reason if reason.type in comparator_types]
            del info.reason[:]
            info.reason.extend(compared)
            if not compared:
                del anomalies.anomaly_info[feature]
        anomalies.ClearField("dataset_anomaly_info")
        lines = [line.replace("training and serving", f"train and {name.split()[0]}")
                 .replace("current and previous", "this span and the previous one")
                 for line in anomaly_lines(anomalies)]
        if lines:
            found[name] = lines
    return found


def describe_anomalies(found: Dict[str, List[str]], span: int, schema_path: str,
                       stopped: bool) -> str:
    count = sum(map(len, found.values()))
    outcome = ("the run stops before Transform: nothing is trained or pushed" if stopped
               else "allowed (--allow-anomalies), the run goes on")
    lines = [f"span {span}: {count} data validation anomalies (schema {schema_path}); {outcome}:"]
    lines += [f"  {where}: {anomaly}" for where, anomalies in found.items() for anomaly in anomalies]
    if stopped:
        lines.append("fix the data; if the change is intended, update the schema (`mtmoe schema "
                     "update`) or the thresholds (config `validation`), or re-run with "
                     "--allow-anomalies")
    return "\n".join(lines)


def pin_schema(schema_path: str, folder: str) -> str:
    """A copy of the schema file named by its content, for ImportSchemaGen: TFX's cache keys on the
    path, so an edited schema under the same path would not be re-imported."""
    if not os.path.isfile(schema_path):
        raise UserError(f"{schema_path}: schema file not found; create it from your data with "
                        "`mtmoe schema update --config <config> --data <data root>`")
    with open(schema_path, "rb") as f:
        content = f.read()
    pinned = os.path.join(folder, f"schema-{hashlib.sha256(content).hexdigest()[:16]}.pbtxt")
    if not fileio.exists(pinned):
        fileio.makedirs(folder)
        with fileio.open(pinned + ".tmp", "wb") as f:
            f.write(content)
        fileio.rename(pinned + ".tmp", pinned, overwrite=True)
    return pinned


class LatestIfAnyStrategy(LatestArtifactStrategy):
    """The latest artifact, or none (TFX's strategy logs an input resolution error on the first run)."""

    def resolve_artifacts(self, store, input_dict):
        return self._resolve(input_dict)


@component
def DataGate(examples: InputArtifact[standard_artifacts.Examples],
             statistics: InputArtifact[standard_artifacts.ExampleStatistics],
             anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
             schema: InputArtifact[standard_artifacts.Schema],
             checked_statistics: OutputArtifact[standard_artifacts.ExampleStatistics],
             label_fields: Parameter[str],
             max_label_drift: Parameter[float],
             max_split_skew: Parameter[float],
             allow_anomalies: Parameter[int],
             schema_source: Parameter[str],
             previous_statistics: InputArtifact[standard_artifacts.ExampleStatistics] = None):
    """Stops the run on ExampleValidator's anomalies or label drift / skew, unless allowed."""
    import tensorflow_data_validation as tfdv

    schema_path = os.path.join(schema.uri, "schema.pbtxt")  # ImportSchemaGen's copy of schema_source
    span = examples.get_int_custom_property(SPAN_PROPERTY_NAME)
    found = {split: lines for split, lines in read_anomalies(anomalies.uri).items() if lines}
    current = read_statistics(statistics.uri)
    previous = read_statistics(previous_statistics.uri).get(TRAIN) if previous_statistics else None
    found.update(compare_labels(current, previous, tfdv.load_schema_text(schema_path),
                                json.loads(label_fields), max_label_drift, max_split_skew))
    if found and not allow_anomalies:
        raise UserError(describe_anomalies(found, span, schema_source, stopped=True))
    if found:
        warn(describe_anomalies(found, span, schema_source, stopped=False))
    io_utils.copy_dir(statistics.uri, checked_statistics.uri)
    checked_statistics.split_names = statistics.split_names
    checked_statistics.set_int_custom_property(SPAN_PROPERTY_NAME, span)
    checked_statistics.set_int_custom_property("anomalies", sum(map(len, found.values())))
    with fileio.open(os.path.join(checked_statistics.uri, GATE_FILE), "w") as f:
        f.write(json.dumps(found, indent=1))
