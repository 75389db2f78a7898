"""JSON text exactly as ``json.dumps(value, indent=2)`` writes it, several times faster.

The standard library encodes indented JSON in pure Python, one generator step
per token; a diff listing a million orderings spends most of its time there.
:func:`dumps` builds the same text with the C string encoder and plain string
joins, and encodes a list of strings (a call path, a stack) once per value.
Anything but dicts with string keys, lists, tuples, strings, ints, bools and
None goes to the standard library, so the text is the same in every case.
"""

from __future__ import annotations

import json
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _string
from typing import Any


def dumps(value: Any, indent: str = "") -> str:
    """``json.dumps(value, indent=2)``, its lines after the first indented by ``indent``
    (a value nested in a document)."""
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:
        return int.__repr__(value)
    if kind is dict:
        return _object(value, indent)
    if kind is list or kind is tuple:
        return _array(value, indent)
    if value is None or kind is bool:
        return "null" if value is None else "true" if value else "false"
    return json.dumps(value, indent=2).replace("\n", "\n" + indent)


def _object(value: dict, indent: str) -> str:
    if not value:
        return "{}"
    inner = indent + "  "
    parts = []
    for k, v in value.items():
        if type(k) is not str:  # json's own key conversions
            return json.dumps(value, indent=2).replace("\n", "\n" + indent)
        parts.append(_string(k) + ": " + (_string(v) if type(v) is str else dumps(v, inner)))
    return "{\n" + inner + (",\n" + inner).join(parts) + "\n" + indent + "}"


def _array(value: list | tuple, indent: str) -> str:
    if not value:
        return "[]"
    try:
        return _strings(tuple(value), indent)
    except TypeError:  # not all strings
        pass
    inner = indent + "  "
    body = (",\n" + inner).join([dumps(v, inner) for v in value])
    return "[\n" + inner + body + "\n" + indent + "]"


@lru_cache(maxsize=1 << 16)
def _strings(values: tuple[str, ...], indent: str) -> str:
    """A non-empty list of strings, as :func:`dumps` writes it (TypeError if one is not)."""
    inner = indent + "  "
    if not all(type(v) is str for v in values):
        raise TypeError("not a list of strings")
    return "[\n" + inner + (",\n" + inner).join(map(_string, values)) + "\n" + indent + "]"
