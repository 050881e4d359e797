"""The generated configuration reference: in step with the code, and complete."""
import dataclasses
import os
import typing

from mtmoe.core.config import Config, TaskConfig
from mtmoe.core.config_reference import reference_markdown, type_text

PAGE = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config-reference.md")


def test_the_checked_in_reference_is_the_generated_one():
    with open(PAGE) as f:
        checked_in = f.read()
    assert checked_in == reference_markdown(), \
        "docs/config-reference.md is out of date with mtmoe/core/config.py: run `make docs`"


def test_every_field_of_every_section_has_a_row_and_a_description():
    page = reference_markdown()
    sections = [TaskConfig] + [f.type for f in dataclasses.fields(Config)
                               if dataclasses.is_dataclass(f.type)]
    for section in sections:
        for name, info in section.__pydantic_fields__.items():
            assert f"| `{name}` |" in page, (section.__name__, name)
            assert info.description, f"{section.__name__}.{name} has no description"


def test_types_read_as_the_validation_checks_them():
    fields = TaskConfig.__pydantic_fields__
    assert type_text(fields["max_labels"].annotation, fields["max_labels"].metadata) == "integer >= 1"
    assert type_text(typing.Literal["a", "b"]) == "one of: `a`, `b`"
    page = reference_markdown()
    assert "| `dropout` | number >= 0, < 1 | `0.3` |" in page
    assert "| `loss_weight_range` | list of number > 0 (at most 2 values) | `[0.1, 10.0]` |" in page
