"""What the trial config and the grid format share: YAML/CLI value coercion and readable validation errors.

Both schemas are pydantic v2 models (issue #12): one declaration of each key gives its coercion, its validation,
its ``--help`` line and its JSON Schema. Pydantic is the field's usual choice (FastAPI, Ray, W&B, Hydra's
successors), is already installed with W&B and Ray, reports every problem of a file at once with its key path,
and writes JSON Schema from the same models, so an editor checks a grid against exactly what the code accepts.
What this module adds is the wording: messages name the key path, the value and what is allowed, and unknown keys
get "did you mean", as this project's hand-written checks did before.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import ErrorDetails

# YAML reads `1e-4` and `1e6` as text (YAML 1.1 wants a dot), the command line gives text for everything:
# numbers come as text too, and a number may stand for a text value (`stddev_schedule: 0.2`).
MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)
NULL_TEXTS = ("none", "null")


class At(ValueError):
    """A validator's message about a part of its value: ``at`` continues the key path (``[2]``, ``.hopper_hop``)."""

    def __init__(self, message: str, at: str = ""):
        super().__init__(message)
        self.at = at


def _int_like(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected int")
    if isinstance(value, str):
        try:
            as_float = float(value.replace("_", ""))
        except ValueError:
            return value  # pydantic reports it as not an integer
        if as_float.is_integer():
            return int(as_float)
    return value


def _float_like(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected float")
    return value


def is_null(value: Any) -> bool:
    """null in YAML, or `none`/`null` written as text (the command line)."""
    return value is None or (isinstance(value, str) and value.lower() in NULL_TEXTS)


def _null_text(value: Any) -> Any:
    return None if is_null(value) else value


# Numbers from YAML or the command line: "1e6" and "1_000_000" are ints, true/false are not numbers.
Int = Annotated[int, BeforeValidator(_int_like)]
Float = Annotated[float, BeforeValidator(_float_like)]
Number = Annotated[int | float, BeforeValidator(_float_like)]  # an int stays an int (`cpu: 2`), a fraction a float
Nullable = BeforeValidator(_null_text)  # `none`/`null` as text mean null for keys that take null


def allowed_text(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def did_you_mean(key: str, known: Sequence[str], descriptions: Mapping[str, str] | None = None) -> str:
    """ " (did you mean ...?)": close spellings; else the key's initials (learning_rate -> lr) and the keys whose
    description says it in words (learning_rate -> "learning rate for all networks")."""
    close = difflib.get_close_matches(key, list(known), n=3)
    if not close and "_" in key:
        words = [word for word in key.lower().split("_") if word]
        initials = "".join(word[0] for word in words)
        phrase = " ".join(words)
        close = [name for name in known if name == initials]
        close += [name for name in known if name not in close and phrase in (descriptions or {}).get(name, "").lower()][
            :3
        ]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def key_path(loc: Sequence[str | int]) -> str:
    """('axes', 'bn_mode', 1) -> 'axes.bn_mode[1]'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_TYPE_WORDS = {
    "int_type": "expected int",
    "int_parsing": "expected int",
    "int_from_float": "expected int",
    "float_type": "expected float",
    "float_parsing": "expected float",
    "finite_number": "must be a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "too_short": "must not be empty",
}


def error_text(error: ErrorDetails, bounds: Callable[[str], tuple[Any, Any]] | None = None) -> tuple[str, str]:
    """(text, key-path continuation) for one pydantic error, without key path or value."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), ValueError):
        exc = ctx["error"]
        return str(exc), getattr(exc, "at", "")
    if kind == "literal_error":
        return "allowed: " + ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", "")))), ""
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        field = next((part for part in reversed(error["loc"]) if isinstance(part, str)), "")
        low, high = bounds(field) if bounds else (None, None)
        if low is not None and high is not None:
            return f"allowed range is [{low}, {high}]", ""
        sign = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        return f"must be {sign} {next(iter(ctx.values()))}", ""
    return _TYPE_WORDS.get(kind, error["msg"]), ""


def model_bounds(model: type[BaseModel]) -> Callable[[str], tuple[Any, Any]]:
    """field -> (lower, upper) bound declared on ``model`` (None where unbounded), for range messages."""

    def bounds(name: str) -> tuple[Any, Any]:
        field = model.model_fields.get(name)
        low = high = None
        for item in field.metadata if field else ():
            low = getattr(item, "ge", getattr(item, "gt", low))
            high = getattr(item, "le", getattr(item, "lt", high))
        return low, high

    return bounds


_JSON_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def standard_bounds(schema: Any) -> Any:
    """Pydantic writes a bound on a type with a before-validator (``Int``, ``Float``) under its own name (``ge``);
    JSON Schema calls it ``minimum``: rename them so editors enforce ranges too."""
    if isinstance(schema, dict):
        return {_JSON_BOUNDS.get(key, key): standard_bounds(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [standard_bounds(item) for item in schema]
    return schema
