"""JSON Schema validators for the named schemas of spec/openapi.yaml (built once per process)."""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conformance.specfiles import openapi

__all__ = ["validator", "schema_errors"]

_URI = "urn:chat-conformance:openapi"


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(
        _URI, Resource.from_contents(openapi(), default_specification=DRAFT202012)
    )


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """Validator for ``#/components/schemas/<name>``."""
    if name not in openapi().get("components", {}).get("schemas", {}):
        raise KeyError(f"schema {name!r} not in spec/openapi.yaml")
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{name}"}, registry=_registry())


def schema_errors(name: str, instance: Any, limit: int = 10) -> list[tuple[str, str]]:
    """(JSON path, message) of each way ``instance`` breaks schema ``name``, best first. A run validates the
    same JSON more than once (a request when drawn and when judged, an answer by its check and by the
    run-wide judge): the verdict of a JSON text is kept (its text is the key: 1 and 1.0 differ)."""
    try:
        text = json.dumps(instance, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (a check's own object): validated as it is
        return _errors(name, instance, limit)
    return list(_cached_errors(name, text, limit))


@functools.lru_cache(maxsize=4096)
def _cached_errors(name: str, text: str, limit: int) -> tuple[tuple[str, str], ...]:
    return tuple(_errors(name, json.loads(text), limit))


def _errors(name: str, instance: Any, limit: int) -> list[tuple[str, str]]:
    errs = sorted(validator(name).iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.path)))
    return [(e.json_path, e.message[:300]) for e in errs[:limit]]
