"""Parsing of the human units used in configuration: durations and sizes."""

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string such as "250ms", "30s", "10m", "2h", "7d"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_FACTORS[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 10m, 2h or 7d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from a number or a string such as "20MB", "512KiB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 20MB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(float(match.group(1)) * _SIZE_FACTORS[(match.group(2) or "b").lower()])
    else:
        raise ValueError(f"{value!r} is not a size; write e.g. 20MB or 512KiB")
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*(ms|s|m|h|d)?$"},
            ],
            "description": "seconds, or a string such as 30s, 10m, 2h, 7d",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
            "description": "bytes, or a string such as 20MB or 512KiB",
        }
    ),
]
# A size where 0 means "none" (a floor that is off).
SizeOrZero = Annotated[
    int,
    BeforeValidator(lambda value: 0 if value in (0, "0") and value is not False else parse_size(value)),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
            "description": "bytes, or a string such as 20MB or 512KiB; 0 for none",
        }
    ),
]
