"""The run's summary in a terminal, the same words from every front-end (the CLI prints them; the pytest
plugin writes them in its terminal summary): what fails the gate, what is only a warning, what was not
judged and why, the levels kept, the cost, the files written, and the verdict as the last line. Target
text is escaped, never interpreted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HEADER = "chat-conformance"


def escape_controls(text: str) -> str:
    """Target-controlled text bound for a terminal: control characters (ANSI escapes, CR, BEL) and bidi
    overrides written as escapes (``\\x1b``), never interpreted."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def one_line(violations: list[dict[str, Any]]) -> str:
    """A check's violations in one line: the first one's requirement, message and JSON path, the others
    counted; the evidence is in the reports."""
    first = violations[0]
    message = " ".join(str(first.get("message", "")).split())[:300]
    line = f"{first['requirement']}: {message}"
    if first.get("path"):
        line += f" (at {first['path']})"
    if len(violations) > 1:
        others = sorted({v["requirement"] for v in violations[1:]})
        line += f"; {len(violations) - 1} more violation(s): {', '.join(others)}"
    return escape_controls(line + "; evidence in the reports")


def evidence_hint(res: dict[str, Any], rid: str) -> str:
    """Where the first violation of ``rid`` was seen and what the target sent there (cut short; escaped by the
    caller): enough to recognise it, the evidence is in the reports."""
    for rec in res["checks"]:
        for v in rec.get("violations", []):
            if v.get("requirement") == rid:
                received = " ".join(str(v.get("received", "")).split())
                received = received[:80] + ("..." if len(received) > 80 else "")
                return f" (at {v.get('path') or '$'}: received {received})" if received else ""
    return ""


def summary_lines(res: dict[str, Any], written: list[Path]) -> list[str]:
    """The summary's lines (escaped), without the verdict line."""
    from conformance.results import (
        finding_groups,
        is_partial,
        levels_kept,
        not_judged_lines,
        only_waived_below,
    )

    out: list[str] = []

    def write(line: str) -> None:
        out.append(escape_controls(line))

    groups = finding_groups(res)
    fail_on = str(res.get("fail_on", "MUST")).lower()
    for kind, rows in (("FAIL", groups["failures"]),
                       (f"WARN (below --fail-on {fail_on})", groups["warnings"]),
                       ("INFO (MAY, informational)", groups["informational"])):
        for r in rows[:40]:
            write(f"  {kind} {r['id']} ({r['level']}): {r['reason'][:200]}{evidence_hint(res, r['id'])}")
        if len(rows) > 40:
            write(f"  ... and {len(rows) - 40} more {kind.split()[0]} (in the reports)")
    for rec in [r for r in res["checks"] if r["outcome"] == "error"][:5]:  # the suite's own fault, in full
        write(f"  INTERNAL ERROR in {rec['nodeid']}: {rec.get('error', '')[:1500]}")
    if groups["waived"]:
        write(f"  WAIVED {len(groups['waived'])}: " + ", ".join(r["id"] for r in groups["waived"][:10]))
    for line in not_judged_lines(res):
        write(line)
    write(levels_kept(res["level_reached"], res.get("level", "MAY"), partial=is_partial(res),
                      waived=only_waived_below(res)))
    c = res["cost"]
    write(
        f"cost: {c['requests']} requests, {c['prompt_tokens']} prompt + {c['completion_tokens']} "
        f"completion tokens, {c['retries']} retries; {res.get('duration_s', 0):.1f} s"
    )
    for p in written:
        write(f"wrote {p}")
    return out


def verdict_line(res: dict[str, Any]) -> str:
    """The console's last line: the verdict in words (escaped)."""
    from conformance.results import verdict_words

    return escape_controls(f"{HEADER}: {verdict_words(res)}")


def section_rule(title: str = HEADER, width: int = 80) -> str:
    """pytest's section rule (``==== title ====``), so the CLI's summary reads as it always did."""
    fill = max(2, width - len(title) - 2)
    left = fill // 2
    return f"{'=' * left} {title} {'=' * (fill - left)}"
