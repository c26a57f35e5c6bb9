"""Generate JSON values that validate against a (practical subset of) JSON Schema.

Words come from a callable (the model), so values follow the model's sampling. Supported keywords: type
(single or list), properties, required, additionalProperties, enum, const, anyOf/oneOf/allOf (first
branch), items, minItems/maxItems, minLength/maxLength, minimum/maximum/exclusiveMinimum/exclusiveMaximum,
multipleOf (integers), $ref to ``#/$defs/...`` or ``#/definitions/...``. Unknown shapes fall back to a string.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["generate", "violate"]

Words = Callable[[], str]


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 16:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return {}
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema, seen = node, seen + 1
    return schema


def _type_of(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        t = non_null[0] if non_null else "null"
    if isinstance(t, str):
        return t
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _number(schema: dict[str, Any], word: str, integer: bool) -> int | float:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    xhi = schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    if isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        lo = xlo + step if lo is None else max(lo, xlo + step)
    if isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        hi = xhi - step if hi is None else min(hi, xhi - step)
    value: float = float(len(word.strip()) + (0 if integer else 0.5))
    if lo is not None and value < lo:
        value = math.ceil(lo) if integer else lo
    if hi is not None and value > hi:
        value = math.floor(hi) if integer else hi
    if integer:
        iv = int(value)
        mult = schema.get("multipleOf")
        if isinstance(mult, int) and mult > 0:
            iv = (iv // mult) * mult
            if lo is not None and iv < lo:
                iv += mult
        return iv
    return value


def generate(schema: Any, words: Words, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid against ``schema`` (words for strings drawn from ``words``)."""
    if root is None:
        root = schema if isinstance(schema, dict) else {}
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return words().strip()
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        options = schema["enum"]
        return options[len(words()) % len(options)]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return generate(schema[key][0], words, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(part, root)
            if isinstance(part, dict):
                for k, v in part.items():
                    if k in ("properties",) and isinstance(merged.get(k), dict):
                        merged[k] = {**merged[k], **v}
                    elif k == "required" and isinstance(merged.get(k), list):
                        merged[k] = merged[k] + list(v)
                    else:
                        merged[k] = v
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return generate({**merged, **rest}, words, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if depth < 4 or name in required:
                out[name] = generate(sub, words, root, depth + 1)
        for name in required:
            if name not in out:
                extra = schema.get("additionalProperties")
                out[name] = generate(extra if isinstance(extra, dict) else {}, words, root, depth + 1)
        return out
    if kind == "array":
        lo = schema.get("minItems", 1 if depth < 3 else 0)
        hi = schema.get("maxItems")
        count = max(int(lo), 1 if depth < 3 else 0)
        if isinstance(hi, int):
            count = min(count, hi)
        items = schema.get("items", {})
        return [generate(items, words, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return _number(schema, words(), True)
    if kind == "number":
        return _number(schema, words(), False)
    if kind == "boolean":
        return len(words()) % 2 == 0
    if kind == "null":
        return None
    text = words().strip() or "x"
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")
    if isinstance(min_len, int):
        while len(text) < min_len:
            text += words().strip() or "x"
    if isinstance(max_len, int):
        text = text[:max_len]
    return text


def violate(value: Any, schema: Any) -> Any:
    """A JSON value that does NOT validate against ``schema`` (for fault modes), derived from ``value``.

    For an object schema the result stays an object where possible: required properties are dropped, else
    typed properties get a value of the wrong type, else an unexpected property is added when
    additionalProperties is false; a schema that accepts any object gets a list.
    """
    schema = _resolve(schema, schema if isinstance(schema, dict) else {})
    if not isinstance(schema, dict):
        return value
    if _type_of(schema) == "object" and isinstance(value, dict):
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        if required:
            return {k: v for k, v in value.items() if k not in required}
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        typed = [
            k
            for k, sub in props.items()
            if isinstance(sub, dict)
            and "type" in sub
            and "null" not in (sub["type"] if isinstance(sub["type"], list) else [sub["type"]])
        ]
        if typed:
            out = dict(value)
            for k in typed:
                out[k] = "wrong" if isinstance(out.get(k), list) else []
            return out
        if schema.get("additionalProperties") is False:
            return {**value, "unexpected_property": True}
        return [value]
    if isinstance(value, str):
        return [value]
    return "wrong"
