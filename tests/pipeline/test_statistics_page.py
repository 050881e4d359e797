"""The statistics page from hand-made TFDV statistics."""
import re

from tensorflow_metadata.proto.v0 import statistics_pb2

from mtmoe.pipeline.statistics_page import statistics_page

Feature = statistics_pb2.FeatureNameStatistics


def _statistics(examples: int, labels: dict, amounts: list):
    """One split: an `intent` label with these counts (the other examples lack it) and a numeric
    `amount` with this mean, median and max."""
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = statistics.datasets.add(num_examples=examples)
    label = dataset.features.add(type=Feature.STRING)
    label.path.step.append("intent")
    label.string_stats.common_stats.num_non_missing = sum(labels.values())
    label.string_stats.common_stats.num_missing = examples - sum(labels.values())
    label.string_stats.common_stats.tot_num_values = sum(labels.values())
    label.string_stats.unique = len(labels)
    for value, count in labels.items():
        label.string_stats.top_values.add(value=value, frequency=count)
    number = dataset.features.add(type=Feature.FLOAT)
    number.path.step.append("amount")
    number.num_stats.common_stats.num_non_missing = examples
    number.num_stats.mean, number.num_stats.median, number.num_stats.max = amounts
    histogram = number.num_stats.histograms.add(type=statistics_pb2.Histogram.STANDARD)
    histogram.buckets.add(low_value=0, high_value=5, sample_count=examples)
    return statistics


def _visible_text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]*>", " ", page).split())


def test_the_page_shows_each_splits_label_counts_numbers_and_no_markup_from_the_data():
    page = statistics_page(
        {"train": _statistics(40, {"pay_bill": 30, "<script src=//x.example/a.js>": 8}, [2.5, 2, 5]),
         "eval": _statistics(10, {"pay_bill": 9, "transfer": 1}, [3.25, 3, 4])},
        {"intent": "intent"})
    shown = _visible_text(page)
    assert shown.index("intent label of task intent") < shown.index("amount")  # labels first
    assert "missing 5.0% 0.0%" in shown  # 2 of 40 train examples have no intent
    assert "pay_bill 30 78.9% 9 90.0%" in shown  # count and share of the split's values
    assert "transfer — — 1 10.0%" in shown  # an eval value that train does not have
    assert "mean 2.5 3.25" in shown and "median 2 3 max 5 4" in shown
    assert "<script" not in page and "&lt;script src=//x.example/a.js&gt;" in page
    assert page.count("<rect ") == 2  # a histogram per split
