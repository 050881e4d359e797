"""The curated schema, the label drift / skew checks and the message a stopped run prints; then
`mtmoe schema update` on converted spans (in this process, so TensorFlow starts once)."""
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
import yaml

from mtmoe.components.data_validation import (compare_labels, curate_schema, describe_anomalies,
                                              pin_schema)
from mtmoe.core.errors import UserError


def _statistics(intents, text="pay bob", **other):
    return tfdv.generate_statistics_from_dataframe(pd.DataFrame(
        {"text": [text] * len(intents), "intent": intents, **other}))


def test_curated_schema_requires_the_text_and_lists_each_label_fields_values():
    schema = curate_schema(_statistics(["pay", "save", "pay"], notes=["a", "b", "c"]), ["intent"])
    assert {feature.name for feature in schema.feature} == {"text", "intent"}  # notes: not ours
    text = tfdv.get_feature(schema, "text")
    assert text.presence.min_fraction == 1.0 and not text.HasField("domain")
    intent = tfdv.get_feature(schema, "intent")
    assert set(tfdv.get_domain(schema, "intent").value) == {"pay", "save"}
    assert not intent.HasField("shape")  # a missing label is an anomaly, not a parse error
    assert intent.presence.min_fraction == 1.0


def test_every_label_value_gets_a_domain_even_past_tfdvs_inference_limit():
    intents = [f"intent_{i}" for i in range(150)]  # TFDV infers no domain past 100 values
    schema = curate_schema(_statistics(intents), ["intent"])
    assert len(tfdv.get_domain(schema, "intent").value) == 150


def test_a_label_field_no_example_has_cannot_be_curated():
    with pytest.raises(UserError, match="no example has field.* sentiment"):
        curate_schema(_statistics(["pay", "save"]), ["intent", "sentiment"])


def test_label_drift_and_split_skew_past_the_thresholds_are_anomalies():
    train = _statistics(["pay"] * 5 + ["save"] * 5)
    skewed = _statistics(["pay"] * 9 + ["save"])
    schema = curate_schema(train, ["intent"])
    found = compare_labels({"train": train, "eval": skewed, "test": train}, skewed, schema,
                           ["intent"], max_drift=0.3, max_skew=0.3)
    assert set(found) == {"train vs the previous span's train (drift)", "eval vs train (skew)"}
    drift, = found["train vs the previous span's train (drift)"]
    assert drift.startswith("intent: ") and "is 0.4" in drift and "threshold 0.3" in drift
    assert "this span and the previous one" in drift
    skew, = found["eval vs train (skew)"]
    assert "between train and eval" in skew
    assert compare_labels({"train": train, "eval": skewed}, skewed, schema, ["intent"],
                          max_drift=0.5, max_skew=0.5) == {}


def test_comparisons_leave_schema_anomalies_to_the_example_validator():
    schema = curate_schema(_statistics(["pay", "save"]), ["intent"])
    unseen = _statistics(["pay"] * 9 + ["close_account"])
    found = compare_labels({"train": unseen}, _statistics(["pay", "save"] * 5), schema, ["intent"],
                           max_drift=0.3, max_skew=0.3)
    lines = found["train vs the previous span's train (drift)"]
    assert len(lines) == 1 and lines[0].startswith("intent: High Linfty distance"), lines


def test_the_first_span_is_only_compared_with_itself():
    train = _statistics(["pay"] * 5 + ["save"] * 5)
    found = compare_labels({"train": train, "eval": _statistics(["pay"] * 10)}, None,
                           curate_schema(train, ["intent"]), ["intent"], 0.3, 0.3)
    assert list(found) == ["eval vs train (skew)"]


def test_a_stopped_run_lists_each_anomaly_and_says_how_to_go_on():
    found = {"train": ["intent: Unexpected string values: close_account (~1%)."],
             "eval vs train (skew)": ["intent: High Linfty distance: 0.4"]}
    stopped = describe_anomalies(found, 5, "/s/schema.pbtxt", stopped=True)
    lines = stopped.splitlines()
    assert lines[0] == ("span 5: 2 data validation anomalies (schema /s/schema.pbtxt); the run "
                        "stops before Transform: nothing is trained or pushed:")
    assert lines[1] == "  train: intent: Unexpected string values: close_account (~1%)."
    assert lines[2] == "  eval vs train (skew): intent: High Linfty distance: 0.4"
    assert "--allow-anomalies" in lines[3] and "mtmoe schema update" in lines[3]
    allowed = describe_anomalies(found, 5, "/s/schema.pbtxt", stopped=False)
    assert "the run goes on" in allowed and len(allowed.splitlines()) == 3


def test_the_schema_is_pinned_by_content_so_an_edit_is_imported_again(tmp_path):
    schema = tmp_path / "my.schema.pbtxt"
    schema.write_text('feature { name: "text" type: BYTES }\n')
    first = pin_schema(str(schema), str(tmp_path / "pinned"))
    assert pin_schema(str(schema), str(tmp_path / "pinned")) == first
    schema.write_text('feature { name: "text" type: BYTES }\nfeature { name: "intent" type: BYTES }\n')
    second = pin_schema(str(schema), str(tmp_path / "pinned"))
    assert second != first and open(second).read() == schema.read_text()
    with pytest.raises(UserError, match=r"missing.pbtxt: schema file not found; .*mtmoe schema update"):
        pin_schema(str(tmp_path / "missing.pbtxt"), str(tmp_path / "pinned"))


def test_schema_update_writes_the_configs_schema_and_reports_new_label_values(tmp_path, cli,
                                                                               write_jsonl):
    config = tmp_path / "bank.yaml"
    config.write_text(yaml.safe_dump({"tasks": [
        {"name": "intent", "type": "classification", "label_field": "intent"}]}))
    rows = [{"text": "pay bob", "intent": "pay"}, {"text": "save now", "intent": "save"}]
    folder = write_jsonl({"train": rows, "dev": rows, "test": rows})
    data = tmp_path / "data"
    assert cli("data", "convert", "--format", "jsonl", "--config", config, folder, data).returncode == 0

    result = cli("schema", "update", "--config", config, "--data", data)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    schema_path = tmp_path / "bank.schema.pbtxt"  # beside the config, named after it
    assert out.splitlines()[0] == f"wrote {schema_path} from {data / 'span-1'}:"
    assert "  intent: 2 values" in out.splitlines()
    schema = tfdv.load_schema_text(str(schema_path))
    assert set(tfdv.get_domain(schema, "intent").value) == {"pay", "save"}

    rows.append({"text": "close it", "intent": "close_account"})
    folder = write_jsonl({"train": rows, "dev": rows, "test": rows})
    assert cli("data", "convert", "--format", "jsonl", "--config", config, folder, data).returncode == 0
    result = cli("schema", "update", "--config", config, "--data", data)
    assert result.returncode == 0 and "  intent: 3 values (+close_account)" in result.stdout.splitlines()
    result = cli("schema", "update", "--config", config, "--data", data, "--span", 1)
    assert result.returncode == 0 and "  intent: 2 values (-close_account)" in result.stdout.splitlines()

    result = cli("schema", "update", "--config", config, "--data", data, "--span", 7)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {data}: no span-7 (spans there: [1, 2])"
    schema = tfdv.load_schema_text(str(schema_path))  # the refused update left the file alone
    assert list(tfdv.get_domain(schema, "intent").value) == ["pay", "save"]
