"""The run report from artifact files, without running the pipeline."""
import json
import os
import re

import pytest

from mtmoe.components.test_scoring import TestMetrics
from mtmoe.core.config import load_config
from mtmoe.core.file_names import BREAKDOWN_FILE, HISTORY_FILE
from mtmoe.pipeline.report import REPORT_MD, build_report, write_report
from mtmoe.pipeline.report_text import REPORT_JSON


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    config = load_config()
    folder = tmp_path_factory.mktemp("artifacts")
    model_run = folder / "model_run"
    test_metrics = folder / "test_metrics"
    model_run.mkdir()
    test_metrics.mkdir()
    history = {"loss": [2.0, 1.0], "val_loss": [2.1, 1.3], "val_intent_accuracy": [0.5, 0.8],
               "val_slots_span_f1": [0.2, 0.6]}
    (model_run / HISTORY_FILE).write_text(json.dumps(history))
    gates = {f"ffn_{i}": {t.name: {"mean_gate": [0.5, 0.25, 0.25], "load": [0.4, 0.4, 0.2]}
                          for t in config.tasks} for i in range(2)}
    breakdown = {
        "intent": {"kind": "confusion", "counts": {"pay_bill": {"pay_bill": 3, "transfer": 1},
                                                   "transfer": {"transfer": 2}},
                   "reliability": [{"low": 0.6, "high": 2 / 3, "confidence": 0.65, "accuracy": 0.5,
                                    "count": 2},
                                   {"low": 14 / 15, "high": 1.0, "confidence": 0.97,
                                    "accuracy": 1.0, "count": 4}]},
        "slots": {"kind": "per_class", "counts": {"amount": {"tp": 3, "fp": 1, "fn": 0}}},
        "sentiment": {"kind": "confusion", "counts": {"neutral": {"neutral": 2}}},
        "signals": {"kind": "per_class", "counts": {"urgent": {"tp": 1, "fp": 0, "fn": 1}}},
    }
    (test_metrics / BREAKDOWN_FILE).write_text(json.dumps(breakdown))
    return config, {"ModelRun": str(model_run), TestMetrics.TYPE_NAME: str(test_metrics)}, gates


def test_report_from_artifacts_links_only_plots_it_wrote(tmp_path, artifacts):
    config, uris, gates = artifacts
    summary = {"blessed": False, "pushed_model": None, "components": {"Trainer": 12.5},
               "gate_statistics": gates,
               "test_metrics": {"intent": {"accuracy": 0.75, "ece": 0.08, "nll": 0.41},
                                "overall": {"accuracy": 0.5}},
               "calibration": {"intent": {"temperature": 1.7, "ece_before": 0.12, "ece_after": 0.03,
                                          "nll_before": 0.6, "nll_after": 0.4}},
               "rejection": {"intent": {"reject_below": 0.45, "criterion": "configured"}}}
    html = write_report(build_report("run-1", config, summary, uris), config, str(tmp_path / "report"))
    folder = os.path.dirname(html)
    text = open(os.path.join(folder, REPORT_MD)).read()
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert sorted(images) == ["plots/confusion_intent.png", "plots/confusion_sentiment.png",
                              "plots/gates_ffn_0.png", "plots/gates_ffn_1.png",
                              "plots/reliability_intent.png", "plots/training_curves.png"]
    for image in images:
        with open(os.path.join(folder, image), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"\| amount \| 0\.7500 \| 1\.0000 \| 0\.8571 \| 3 \|", text)  # P, R, F1, gold
    assert "| intent | accuracy | — | 0.8 | — | — | 0.02 | — | 0.7500 |" in text
    assert "| intent | 1.7000 | 0.1200 | 0.0300 | 0.6000 | 0.4000 | 0.0800 | 0.4100 |" in text
    assert "intent answers out of scope below a top in-scope probability of 0.4500 (configured)" in text
    assert "NOT blessed" in text and "<table>" in open(html).read()
    report = json.load(open(os.path.join(folder, REPORT_JSON)))
    assert [row["task"] for row in report["headline"]] == [t.name for t in config.tasks]


@pytest.fixture(scope="module")
def report_with_statistics(tmp_path_factory, artifacts) -> str:
    """A report folder written from the artifacts and TFDV statistics of a train and an eval split,
    each with one label value of its own."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    config, uris, _ = artifacts
    folder = tmp_path_factory.mktemp("statistics_report")
    for split, examples in (("train", 40), ("eval", 10)):
        statistics = statistics_pb2.DatasetFeatureStatisticsList()
        dataset = statistics.datasets.add(num_examples=examples)
        feature = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
        feature.path.step.append("intent")
        feature.string_stats.common_stats.num_non_missing = examples
        feature.string_stats.top_values.add(value=f"{split}_label", frequency=examples)
        (folder / "statistics" / f"Split-{split}").mkdir(parents=True)
        (folder / "statistics" / f"Split-{split}" / "FeatureStats.pb").write_bytes(
            statistics.SerializeToString())
    uris = {**uris, "ExampleStatistics": str(folder / "statistics")}
    summary = {"blessed": True, "pushed_model": None, "components": {}, "test_metrics": {}}
    html = write_report(build_report("run-1", config, summary, uris), config, str(folder / "report"))
    return os.path.dirname(html)


def _visible_text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]*>", " ", page).split())


def test_the_data_section_counts_each_split_and_links_a_statistics_page_of_its_values(
        report_with_statistics):
    text = open(os.path.join(report_with_statistics, REPORT_MD)).read()
    assert "| train | 40 |" in text and "| eval | 10 |" in text
    assert "[statistics.html](statistics.html)" in text
    shown = _visible_text(open(os.path.join(report_with_statistics, "statistics.html")).read())
    # each value, then its count and share in train and in eval ("—": not among that split's values)
    assert re.search(r"\bintent\b.*\btrain_label 40 100\.0% — — eval_label — — 10 100\.0%", shown)


# A reference the browser would fetch from another host: an attribute, a CSS url() or an import
# whose address starts with a scheme and // or with // alone.
EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?|url\(\s*["']?|@?import\b[\s(]*["']?)"""
    r"""\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.IGNORECASE)


def test_every_page_of_the_report_renders_offline(report_with_statistics):
    pages = sorted(name for name in os.listdir(report_with_statistics) if name.endswith(".html"))
    assert pages == ["report.html", "statistics.html"]
    for page in pages:
        text = open(os.path.join(report_with_statistics, page)).read()
        assert EXTERNAL_REFERENCE.findall(text) == [], page


def test_the_first_runs_report_suggests_min_values_its_eval_scores_allow():
    from mtmoe.pipeline.report_text import suggested_thresholds

    def row(task, eval_score, min_value, max_drop=0.02):
        return {"task": task, "metric": "accuracy", "eval": eval_score, "min_value": min_value,
                "max_drop": max_drop}

    report = {"had_baseline": False, "headline": [
        row("intent", 0.9376, 0.3), row("slots", 0.70, 0.69), row("mood", None, 0.1)]}
    lines = suggested_thresholds(report)
    assert "| intent | accuracy | 0.9376 | 0.3 | 0.91 |" in lines  # 0.9176 rounded down
    assert not any("| slots |" in line or "| mood |" in line for line in lines)  # 0.68: not tighter
    assert suggested_thresholds({**report, "had_baseline": True}) == []
