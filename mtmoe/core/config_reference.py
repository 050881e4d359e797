"""The configuration reference (docs/config-reference.md), generated from the pydantic config
classes that validate a config, so that the page cannot drift from the code:

    python -m mtmoe.core.config_reference > docs/config-reference.md      (make docs)

tests/core/test_config_reference.py fails when the checked-in page differs from this output.
"""
import dataclasses
import typing
from typing import List

from pydantic_core import PydanticUndefined

from mtmoe.core.config import Config, TaskConfig

_INTRO = """\
# Configuration reference

Generated from [`mtmoe/core/config.py`](../mtmoe/core/config.py) by `make docs`; do not edit by
hand (a test fails when this page and the code differ). How to write a config and what the sections
are for: [configuration.md](configuration.md).

Every field is optional except a task's `name`, `type` and `label_field`; a field left out takes the
default below. Values are strict: `5` is no string and `yes` no boolean; an integer is accepted where
a number goes. A field the section does not have is an error that names it.
"""

_BOUNDS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}", "max_length": "at most {} values"}
_SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _bounds(metadata) -> List[str]:
    found = []
    for item in metadata:
        for name, text in _BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(text.format(value))
        found += _bounds(getattr(item, "metadata", []))  # a FieldInfo inside Annotated
    return found


def type_text(annotation, metadata=()) -> str:
    """A field's type as a reader needs it: `integer >= 1`, `one of: a, b`, `list of number > 0`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0], [*args[1:], *metadata])
    bounds = ", ".join(_bounds(metadata))
    if origin is typing.Literal:
        text = "one of: " + ", ".join(f"`{a}`" for a in args)
    elif origin is tuple:
        text = "list of " + type_text(args[0])
    elif origin is dict:
        text = f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    elif origin is typing.Union:
        text = " or ".join(type_text(member) for member in args)
    elif annotation is typing.Any:
        text = "any value"
    else:
        text = _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{text} ({bounds})" if bounds and origin is tuple else f"{text} {bounds}".strip()


def _default_text(info) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`".replace("'", '"') if isinstance(value, str) else f"`{value}`"


def _rows(cls) -> List[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, info in cls.__pydantic_fields__.items():
        about = (info.description or "").replace("|", "\\|")
        kind = type_text(info.annotation, info.metadata).replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | {_default_text(info)} | {about} |")
    return rows


def reference_markdown() -> str:
    lines = [_INTRO, "## `tasks` (a list, at least one)", "",
             "Each item is one task: one model output, one loss, one gate of blessing.", "",
             *_rows(TaskConfig)]
    for field in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(field.type):
            continue
        lines += ["", f"## `{field.name}`", ""]
        if field.type.__doc__ and not field.type.__doc__.startswith(field.type.__name__ + "("):
            lines += [" ".join(field.type.__doc__.split()), ""]
        lines += _rows(field.type)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
