"""The window of spans a run trains and evaluates on.

ExampleGen ingests one span per run (TFX's ExampleGen accepts only single-span ranges); the window is
resolved from ML Metadata over every span ExampleGen has ingested, with TFX's RangeConfig.
"""
from tfx.components.example_gen.utils import SPAN_PROPERTY_NAME
from tfx.dsl.input_resolution.strategies.span_range_strategy import SpanRangeStrategy
from tfx.proto import range_config_pb2

_LAST_SPAN = 2**31 - 1


def window_range(window: int):
    """RangeConfig of the newest `window` spans; 0 = every span."""
    if window == 0:
        return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
            start_span_number=0, end_span_number=_LAST_SPAN))
    return range_config_pb2.RangeConfig(rolling_range=range_config_pb2.RollingRange(num_spans=window))


class NewestSpansStrategy(SpanRangeStrategy):
    """SpanRangeStrategy keeping one artifact per span, the latest ingested.

    A span whose files changed is ingested again under the same span number; training on both
    artifacts would count its examples twice.
    """

    def resolve_artifacts(self, store, input_dict):
        resolved = super().resolve_artifacts(store, input_dict)
        if resolved is None:
            return None
        return {key: _latest_per_span(artifacts) for key, artifacts in resolved.items()}


def _latest_per_span(artifacts):
    latest = {}
    for artifact in artifacts:
        span = artifact.get_int_custom_property(SPAN_PROPERTY_NAME)
        if span not in latest or artifact.id > latest[span].id:
            latest[span] = artifact
    return [latest[span] for span in sorted(latest)]
