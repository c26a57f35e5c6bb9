"""``results.json`` against ``spec/results.schema.json``: load, validate, say what is wrong in one line."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from conformance.errors import UsageError

__all__ = ["results_schema", "results_errors", "load_results"]


@functools.cache
def results_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of results.json."""
    from conformance.specfiles import spec_dir

    with open(spec_dir() / "results.schema.json", encoding="utf-8") as fh:
        schema = json.load(fh)
    assert isinstance(schema, dict)
    return schema


def results_errors(results: Any) -> list[str]:
    """Every schema violation of ``results`` as ``"$.path: message"`` (empty when it is valid)."""
    from jsonschema import Draft202012Validator, FormatChecker

    validator = Draft202012Validator(results_schema(), format_checker=FormatChecker())
    out = []
    for err in sorted(validator.iter_errors(results), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        msg = (err.message.splitlines() or [""])[0]
        out.append(f"{path}: {msg[:200]}")
    return out


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate one results.json; a missing, unreadable or invalid file is a one-line UsageError."""
    p = Path(path)
    if p.is_dir():
        if (p / "results.json").is_file():
            p = p / "results.json"
        else:
            raise UsageError(f"{str(path)!r} is a directory without results.json: give the results.json that "
                             "`chat-conformance run --report-dir DIR` wrote")
    if not p.is_file():
        raise UsageError(f"results file {str(path)!r} not found: give the results.json that "
                         "`chat-conformance run --report-dir DIR` wrote")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"results file {str(path)!r} is not readable JSON ({first[:120]}): give a "
                         "results.json written by `chat-conformance run`") from None
    wanted = results_schema()["properties"]["schema_version"]["const"]
    if isinstance(data, dict) and data.get("schema_version") not in (None, wanted):
        raise UsageError(f"results file {str(path)!r} has schema_version {data.get('schema_version')!r}, "
                         f"this suite reads {wanted!r}: re-render it with the chat-conformance version that "
                         "wrote it")
    errors = results_errors(data)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UsageError(f"results file {str(path)!r} is not a chat-conformance results.json "
                         f"({errors[0]}{more}): give a results.json written by `chat-conformance run`")
    assert isinstance(data, dict)
    return data
