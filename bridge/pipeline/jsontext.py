"""JSON text as the bridge writes it per job: compact UTF-8, by orjson.

orjson writes the same text as `json.dumps(value, ensure_ascii=False, separators=(",", ":"))`
for JSON's own types (exponents aside: `1e-7` where the standard library writes `1e-07`) in
a fraction of its time. A job writes JSON several times (its input, the chat request, its
result, its events, the calls it made), and in the instant-answer benchmark the standard
library's encoder was a measurable part of the CPU per job (README, "Measured here").

What orjson refuses (integers beyond 64 bits, keys that are not strings) the standard library
writes, as before. NaN and the infinities, which JSON has no words for, become `null` (the
standard library would write `NaN`, which strict readers refuse). Reading stays with the
standard library: orjson reads integers beyond 64 bits as floats, and an input's numbers are
kept exactly.
"""

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """`value` as compact JSON, UTF-8."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a key that is not a string
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
