"""Expectations (waivers): known failures by requirement id, with a reason and an optional expiry date."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

from conformance.catalog import catalog
from conformance.errors import UsageError

__all__ = ["load_expectations"]

_KEYS = {"id", "reason", "expires", "intermittent"}


def load_expectations(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse a waivers file: ``[[waiver]]`` tables with id, reason, optional ``expires = 2027-01-31`` and
    optional ``intermittent = true`` (a deviation that shows in some runs only: a pass is then not
    "unexpectedly passing")."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"expectations file {str(p)!r} not found: check the --expectations path")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"expectations file {p.name} is not valid TOML ({exc}): fix its syntax") from None
    unknown_top = set(data) - {"waiver"}
    if unknown_top:
        raise UsageError(
            f"expectations file {p.name}: unknown key {sorted(unknown_top)[0]!r}: "
            "use [[waiver]] tables with id, reason, expires"
        )
    out: dict[str, dict[str, Any]] = {}
    for i, w in enumerate(data.get("waiver", []), 1):
        where = f"expectations file {p.name}, waiver {i}"
        if not isinstance(w, dict):
            raise UsageError(f"{where} is not a table: write [[waiver]] with id, reason")
        extra = set(w) - _KEYS
        if extra:
            raise UsageError(
                f"{where}: unknown key {sorted(extra)[0]!r}: "
                "allowed keys are id, reason, expires, intermittent"
            )
        rid = w.get("id")
        if not isinstance(rid, str) or rid not in catalog():
            raise UsageError(
                f"{where}: unknown requirement id {rid!r}: list ids with `chat-conformance requirements`"
            )
        reason = w.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{where} ({rid}) has no reason: say why the failure is accepted")
        expires = w.get("expires")
        if expires is not None and not (
            isinstance(expires, dt.date) and not isinstance(expires, dt.datetime)
        ):
            raise UsageError(f"{where} ({rid}): expires must be a date like 2027-01-31")
        intermittent = w.get("intermittent", False)
        if not isinstance(intermittent, bool):
            raise UsageError(f"{where} ({rid}): intermittent must be true or false")
        if rid in out:
            raise UsageError(f"{where}: {rid} is waived twice: keep one entry")
        out[rid] = {"reason": reason.strip(), "expires": expires, "intermittent": intermittent}
    return out
