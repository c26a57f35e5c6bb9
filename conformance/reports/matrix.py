"""Several runs side by side: an HTML matrix (requirements x targets) and a Markdown table for a README."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from conformance.catalog import CAPABILITIES
from conformance.files import write_atomic

__all__ = ["write_matrix", "render_matrix", "matrix_markdown", "target_label"]


def target_label(results: dict[str, Any]) -> str:
    """``model @ base_url``: how a run's target is named in a column header."""
    t = results.get("target", {})
    return f"{t.get('model', '?')} @ {t.get('base_url', '?')}"


def _headline(res: dict[str, Any]) -> str:
    from conformance.results import is_embedded

    if "verdict" not in res:
        return "?"
    return str(res["verdict"]) + (" (self-test: embedded reference server)" if is_embedded(res) else "")


def _columns(results_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cols = []
    for i, res in enumerate(results_list):
        counts = Counter(r["verdict"] for r in res.get("requirements", {}).values())
        t = res.get("target", {})
        cols.append({"n": i + 1, "label": target_label(res), "model": t.get("model", "?"),
                     "base_url": t.get("base_url", "?"), "profile": res.get("profile", "?"),
                     "suite_version": res.get("suite_version", "?"), "verdict": _headline(res),
                     "exit_code": res.get("exit_code", 1), "level_reached": res.get("level_reached", "none"),
                     "started": res.get("started", ""), "pass": counts.get("pass", 0),
                     "total": sum(counts.values())})
    return cols


def _requirement_rows(results_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order: dict[str, dict[str, Any]] = {}
    for res in results_list:
        for rid, req in res.get("requirements", {}).items():
            order.setdefault(rid, req)
    cap_rank = {c: i for i, c in enumerate(CAPABILITIES)}
    ids = sorted(order, key=lambda rid: (cap_rank.get(order[rid]["capability"], len(cap_rank)),
                                         list(order).index(rid)))
    rows = []
    for rid in ids:
        cells = []
        for res in results_list:
            req = res.get("requirements", {}).get(rid)
            cells.append({"verdict": req["verdict"], "reason": req.get("reason", "")} if req else None)
        verdicts = {c["verdict"] for c in cells if c}
        rows.append({"id": rid, "level": order[rid]["level"], "capability": order[rid]["capability"],
                     "statement": order[rid]["statement"], "cells": cells, "differs": len(verdicts) > 1})
    return rows


def render_matrix(results_list: list[dict[str, Any]]) -> str:
    """The matrix page for several results dicts (deterministic)."""
    from conformance.reports.html import _environment

    rows = _requirement_rows(results_list)
    ctx = {"columns": _columns(results_list), "rows": rows,
           "capability_names": list(dict.fromkeys(r["capability"] for r in rows)),
           "differing": sum(r["differs"] for r in rows)}
    return _environment().get_template("matrix.html.j2").render(**ctx)


def write_matrix(results_list: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``out_dir/matrix.html`` (requirements as rows, one column per run) and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / "matrix.html", render_matrix(results_list))


def _md(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", " ").replace("`", "\\`"))


def matrix_markdown(results_list: list[dict[str, Any]]) -> str:
    """A Markdown table for a README: capabilities as rows, runs as columns, ``pass/total`` in each cell
    (``unsupported`` when every requirement of the capability is unsupported, ``—`` when the run has none)."""
    cols = _columns(results_list)
    caps: list[str] = []
    for res in results_list:
        for req in res.get("requirements", {}).values():
            if req["capability"] not in caps:
                caps.append(req["capability"])
    rank = {c: i for i, c in enumerate(CAPABILITIES)}
    caps.sort(key=lambda c: (rank.get(c, len(rank)), c))
    heads = [f"{_md(c['label'])} ({_md(c['profile'])}, {_md(c['suite_version'])})" for c in cols]
    lines = ["| capability | " + " | ".join(heads) + " |",
             "|---|" + "---|" * len(cols)]
    for cap in caps:
        cells = []
        for res in results_list:
            mine = [r for r in res.get("requirements", {}).values() if r["capability"] == cap]
            if not mine:
                cells.append("—")
            elif all(r["verdict"] == "unsupported" for r in mine):
                cells.append("unsupported")
            else:
                passed = sum(r["verdict"] == "pass" for r in mine)
                failed = sum(r["verdict"] in ("fail", "error") for r in mine)
                mark = " ❌" if failed else (" ✅" if passed == len(mine) else "")
                cells.append(f"{passed}/{len(mine)}{mark}")
        lines.append(f"| {_md(cap)} | " + " | ".join(cells) + " |")
    lines.append("| **verdict** | " + " | ".join(f"**{_md(c['verdict'])}**" for c in cols) + " |")
    return "\n".join(lines) + "\n"
