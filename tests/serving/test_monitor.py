"""`mtmoe monitor`: the drift checks on feature columns, and the logs it refuses."""
import json

import numpy as np
import pytest

from mtmoe.serving.monitor import _count_category, drift_findings


UNKNOWN = [0.7, 0.2, 0.07, 0.03]  # texts with 0, 1, 2, 3 or more unknown tokens


def _columns(rng, n, labels, probabilities, length, unknown=UNKNOWN):
    return {"tokens": rng.poisson(length, n).tolist(),
            "unknown_tokens": [_count_category(int(c)) for c in rng.choice(4, n, p=unknown)],
            "intent_label": rng.choice(labels, n, p=probabilities).tolist(),
            "intent_score": rng.beta(8, 1, n).tolist(),
            "intent_in_scope": rng.choice(["yes", "no"], n, p=[0.97, 0.03]).tolist()}


@pytest.mark.slow
def test_a_sample_like_the_reference_passes_and_a_shifted_one_is_named_feature_by_feature():
    rng = np.random.default_rng(0)
    labels, even = [f"i{i}" for i in range(20)], np.full(20, 0.05)
    reference = _columns(rng, 3000, labels, even, 9)
    assert drift_findings(reference, _columns(rng, 500, labels, even, 9)) == []
    skewed = np.r_[np.full(2, 0.35), np.full(18, 0.3 / 18)]
    shifted = _columns(rng, 500, labels, skewed, 20)
    findings = drift_findings(reference, shifted)
    assert [f.split(":")[0] for f in findings] == ["intent_label", "tokens"]
    # Texts from elsewhere: many more with unknown tokens, at the monitor's smallest sample.
    strange = _columns(rng, 200, labels, even, 9, unknown=[0.45, 0.3, 0.15, 0.1])
    assert [f.split(":")[0] for f in drift_findings(reference, strange)] == ["unknown_tokens"]


def test_unknown_tokens_are_counted_into_four_categories():
    assert [_count_category(n) for n in (0, 1, 2, 3, 9)] == ["0", "1", "2", "3 or more", "3 or more"]


def test_a_malformed_or_small_log_is_one_line_and_exit_2(tmp_path, cli):
    log = tmp_path / "log"
    log.mkdir()
    (log / "requests-20261207T000000-000000001.jsonl").write_text('{"text": "hi"}\n{"text": 3}\n')
    result = cli("monitor", "--requests", log, "--data", tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"error: {log}/requests-20261207T000000-000000001.jsonl:2: a logged "
                             "request needs a 'text' string\n")
    (log / "requests-20261207T000000-000000001.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    result = cli("monitor", "--requests", log, "--data", tmp_path)
    assert result.returncode == 2 and "1 logged texts; at least 200 are needed" in result.stderr
    result = cli("monitor", "--requests", tmp_path / "none", "--data", tmp_path)
    assert result.returncode == 2 and "no request log folder" in result.stderr
