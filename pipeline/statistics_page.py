"""TFDV's statistics of every feature as one HTML page that needs nothing but itself: the splits side
by side, in tables with inline bars and histograms.

TFDV's own view (Facets Overview) loads its scripts from the web when the page is opened, and they are
on no package registry to ship with the report; offline it is a blank page. This page has no script
and references nothing outside itself.
"""
from html import escape
from typing import Dict, List, Mapping

from tensorflow_metadata.proto.v0 import statistics_pb2

NO_VALUE = "—"
_BAR_PX = 120  # a bar's width at a 100% share
_TOP_ROWS = 20  # TFDV's default number of top values per split
_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{margin:0 0 .4em;font-size:1.2em}
section{border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
section.label{border-left:6px solid #2b6cb0;background:#f5f9ff}
.tag{background:#2b6cb0;color:#fff;border-radius:3px;padding:0 .4em;font-size:.8em;margin-left:.4em}
.columns{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
table{border-collapse:collapse;font-size:.9em}
th,td{padding:.15em .6em;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:middle}
th{background:#f0f0f0}th:first-child,td:first-child{text-align:left}
div.value{max-width:28em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-family:monospace}
span.bar{display:inline-block;height:.8em;background:#7fa7d9;vertical-align:middle}
svg rect{fill:#7fa7d9}.note{color:#666;font-size:.85em}"""

Statistics = statistics_pb2.DatasetFeatureStatisticsList
Feature = statistics_pb2.FeatureNameStatistics


def statistics_page(splits: Mapping[str, Statistics], labels: Mapping[str, str]) -> str:
    """The page for {split name: TFDV statistics}, one column per split in the mapping's order.
    `labels` maps a label field to the task that reads it: those features come first, marked."""
    datasets = {split: statistics.datasets[0] for split, statistics in splits.items()}
    features: Dict[str, Dict[str, Feature]] = {}
    for split, dataset in datasets.items():
        for feature in dataset.features:
            features.setdefault(".".join(feature.path.step) or feature.name, {})[split] = feature
    order = [name for name in labels if name in features] + sorted(set(features) - set(labels))
    summary = _table(["split", "examples", "features"],
                     [[escape(split), _number(d.num_examples), len(d.features)]
                      for split, d in datasets.items()])
    sections = [_section(name, features[name], datasets, labels.get(name)) for name in order]
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Data statistics</title>"
            f"<style>{_CSS}</style></head>\n<body>\n<h1>Data statistics</h1>\n"
            f"<p class=\"note\">TFDV's statistics of the examples (StatisticsGen), each split in its "
            f"own column. <a href=\"report.html\">Back to the report</a>.</p>\n{summary}\n"
            + "\n".join(sections) + "\n</body></html>\n")


def _section(name: str, per_split: Dict[str, Feature], datasets, task) -> str:
    splits = list(datasets)
    kind = next(iter(per_split.values())).WhichOneof("stats")
    rows = [["type"] + [_cell(per_split, s, lambda f: Feature.Type.Name(f.type).lower())
                        for s in splits]]
    rows += [[label] + [_cell(per_split, s, lambda f: show(_common(f), datasets[s].num_examples))
                        for s in splits] for label, show in _COMMON_ROWS]
    rows += [[label] + [_cell(per_split, s, lambda f: show(getattr(f, kind))) for s in splits]
             for label, show in _KIND_ROWS.get(kind, [])]
    parts = [_table(["", *map(escape, splits)], rows)]
    if kind == "string_stats":
        parts.append(_top_values(per_split, splits))
    heading, marked = escape(name), ""
    if task:
        heading += f"<span class=\"tag\">label of task {escape(task)}</span>"
        marked = " class=\"label\""
    return (f"<section{marked} id=\"{escape(name)}\"><h2>{heading}</h2>"
            f"<div class=\"columns\">{''.join(parts)}</div></section>")


def _common(feature: Feature):
    return getattr(feature, feature.WhichOneof("stats")).common_stats


_COMMON_ROWS = [
    ("examples with it", lambda c, n: _number(c.num_non_missing)),
    ("missing", lambda c, n: _percent(c.num_missing, n)),
    ("values per example", lambda c, n: f"{c.min_num_values}" if c.min_num_values == c.max_num_values
     else f"{c.min_num_values}–{c.max_num_values}, mean {_number(c.avg_num_values)}"),
]
_KIND_ROWS = {
    "num_stats": [("mean", lambda s: _number(s.mean)), ("std dev", lambda s: _number(s.std_dev)),
                  ("zeros", lambda s: _percent(s.num_zeros, s.common_stats.tot_num_values)),
                  ("min", lambda s: _number(s.min)), ("median", lambda s: _number(s.median)),
                  ("max", lambda s: _number(s.max)), ("histogram", lambda s: _histogram(s.histograms))],
    "string_stats": [("unique values", lambda s: _number(s.unique)),
                     ("mean length", lambda s: _number(s.avg_length))],
    "bytes_stats": [("unique values", lambda s: _number(s.unique)),
                    ("mean bytes", lambda s: _number(s.avg_num_bytes)),
                    ("bytes per value",
                     lambda s: f"{_number(s.min_num_bytes)}–{_number(s.max_num_bytes)}")],
}


def _cell(per_split: Dict[str, Feature], split: str, show) -> str:
    return show(per_split[split]) if split in per_split else NO_VALUE


def _top_values(per_split: Dict[str, Feature], splits: List[str]) -> str:
    """The most frequent values of each split, the first split's first, in at most as many rows as
    TFDV keeps per split; each with every split's count and share of all that split's values.
    NO_VALUE: not among the values TFDV counted in that split."""
    counts, totals, tops = {}, {}, []
    for split in splits:
        if split not in per_split:
            continue
        stats = per_split[split].string_stats
        counts[split] = {b.label: b.sample_count for b in stats.rank_histogram.buckets}
        counts[split].update({v.value: v.frequency for v in stats.top_values})
        totals[split] = stats.common_stats.tot_num_values or stats.common_stats.num_non_missing
        tops.append([v.value for v in stats.top_values])
    values = list(dict.fromkeys(value for top in tops for value in top))
    values = values[:max(_TOP_ROWS, *map(len, tops))]
    rows = []
    for value in values:
        row = [f"<div class=\"value\" title=\"{escape(value)}\">{escape(value)}</div>"]
        for split in splits:
            count = counts.get(split, {}).get(value)
            if count is None:
                row += [NO_VALUE, NO_VALUE, ""]
            else:
                share = count / totals[split] if totals[split] else 0.0
                row += [_number(count), _share(share),
                        f"<span class=\"bar\" style=\"width:{share * _BAR_PX:.0f}px\"></span>"]
        rows.append(row)
    header = ["value"] + [cell for split in splits
                          for cell in (f"{escape(split)} count", f"{escape(split)} share", "")]
    distinct = ", ".join(f"{_number(f.string_stats.unique)} in {escape(split)}"
                         for split, f in per_split.items())
    return (f"<div>{_table(header, rows)}"
            f"<p class=\"note\">The most frequent values; distinct values: {distinct}.</p></div>")


def _histogram(histograms) -> str:
    """TFDV's equal-width histogram as bars in an inline SVG; each bar's tooltip gives its range."""
    buckets = next((h.buckets for h in histograms
                    if h.type == statistics_pb2.Histogram.STANDARD), [])
    if not buckets:
        return NO_VALUE
    width, height = 8, 40
    tallest = max(b.sample_count for b in buckets) or 1
    bars = "".join(
        f"<rect x=\"{i * width}\" y=\"{height - height * b.sample_count / tallest:.1f}\" "
        f"width=\"{width - 1}\" height=\"{height * b.sample_count / tallest:.1f}\"><title>"
        f"{_number(b.low_value)} to {_number(b.high_value)}: {_number(b.sample_count)}</title></rect>"
        for i, b in enumerate(buckets))
    return (f"<svg width=\"{width * len(buckets)}\" height=\"{height}\" role=\"img\">{bars}</svg>"
            f"<br><span class=\"note\">{_number(buckets[0].low_value)} to "
            f"{_number(buckets[-1].high_value)}</span>")


def _table(header: List[str], rows: List[List]) -> str:
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _percent(part, whole) -> str:
    return _share(part / whole) if whole else NO_VALUE


def _share(fraction: float) -> str:
    return "&lt;0.1%" if 0 < fraction < 0.0005 else f"{100 * fraction:.1f}%"
