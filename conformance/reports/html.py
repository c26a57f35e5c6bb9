"""The HTML report: one self-contained ``report.html`` (inline CSS and JS, no network) from a results dict.

Everything the target sent is escaped by Jinja2's autoescape and never marked safe; no target text goes inside
``<script>`` (the page's JS reads what it needs from ``data-`` attributes). Control characters and bidi
overrides are shown as ``\\x1b``-style escapes, and huge bodies and streams are capped with a note. The output
depends only on the results dict (no clock), so it can be snapshot-tested.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2

from conformance.catalog import CAPABILITIES, level_rank
from conformance.evidence import Exchange
from conformance.files import write_atomic
from conformance.latency import OUTCOMES, TIMELINE_CAP, latency_of, timeline_of
from conformance.results import (
    VERDICTS,
    explain_level_reached,
    finding_groups,
    is_embedded,
    is_partial,
    is_warning,
    profile_label,
)
from conformance.target import EMBEDDED_NOTE

__all__ = ["write_html", "render_html", "BODY_CAP", "EVENTS_CAP", "EVENT_DATA_CAP"]

BODY_CAP = 20_000  # characters of one body (request, response, curl, error) shown in the page
EVENTS_CAP = 200  # stream events shown per exchange
EVENT_DATA_CAP = 2_000  # characters of one event's data
FAILURE_VERDICTS = ("fail", "error", "informational", "waived")
TEMPLATES = Path(__file__).resolve().parent / "templates"

# C0/C1 controls (but tab and newline), DEL, and the bidi controls that reorder text on screen.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def visible(text: Any) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``, ``\\u202e``); plain text, not markup."""
    s = "" if text is None else str(text)
    return _INVISIBLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                          else f"\\u{ord(m.group()):04x}", s)


def _capped(text: str | None, cap: int = BODY_CAP) -> dict[str, Any]:
    s = visible(text)
    return {"text": s[:cap], "total": len(s), "capped": len(s) > cap}


def _seconds(value: Any) -> str:
    if value is None:
        return "—"
    v = float(value)
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def _duration(value: Any) -> str:
    v = float(value or 0)
    if v < 60:
        return f"{v:.1f} s"
    return f"{int(v // 60)} min {v % 60:.0f} s"


def when(iso: Any) -> str:
    """``2026-01-01T00:00:00.123+00:00`` -> ``2026-01-01 00:00:00 UTC`` (other strings unchanged)."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?(\+00:00|Z)", str(iso))
    return f"{m.group(1)} {m.group(2)} UTC" if m else str(iso)


def _pretty_request(body: str | None) -> str | None:
    """Our own request body, indented when it is JSON (the response body is always shown as received)."""
    if body is None:
        return None
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


def _exchange_view(index: int, ex: dict[str, Any], referenced: set[int]) -> dict[str, Any]:
    try:
        curl = Exchange.from_dict(ex).curl()
    except (TypeError, ValueError, KeyError):
        curl = "(no reproducer: this exchange does not have the shape of conformance.evidence.Exchange)"
    events = ex.get("events") or []
    return {
        "index": index,
        "label": ex.get("label", ""),
        "method": ex.get("method", ""),
        "url": ex.get("url", ""),
        "stream": bool(ex.get("stream")),
        "status": ex.get("status"),
        "ttfb": _seconds(ex.get("ttfb")),
        "elapsed": _seconds(ex.get("elapsed")),
        "retries": ex.get("retries", 0),
        "transport_error": ex.get("transport_error"),
        "request_headers": sorted((ex.get("request_headers") or {}).items(), key=lambda kv: kv[0].lower()),
        "request_body": _capped(_pretty_request(ex.get("request_body"))) if ex.get("request_body") is not None
        else None,
        "response_headers": sorted((ex.get("response_headers") or {}).items(), key=lambda kv: kv[0].lower()),
        "body": _capped(ex.get("body_text")) if ex.get("body_text") is not None else None,
        "body_truncated": bool(ex.get("body_truncated")),
        "events": [{"n": i, "t": _seconds(ev.get("t")), "event": ev.get("event", "message"),
                    "id": ev.get("id"), "done": bool(ev.get("done")),
                    "data": _capped(ev.get("data"), EVENT_DATA_CAP),
                    "json_error": ev.get("json_error")} for i, ev in enumerate(events[:EVENTS_CAP])],
        "events_total": len(events),
        "events_capped": len(events) > EVENTS_CAP,
        "comments": ex.get("comments", 0),
        "curl": _capped(curl),
        "open": index in referenced,
    }


def _failure_view(req: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    rid = req["id"]
    views = []
    for c in checks:
        if rid not in c.get("requirements", []):
            continue
        mine = [v for v in c.get("violations", []) if v.get("requirement") == rid]
        if not mine and c.get("outcome") != "error":
            continue
        referenced = {v["exchange"] for v in mine if isinstance(v.get("exchange"), int)}
        exchanges = c.get("exchanges", [])

        def label(v: dict[str, Any], exchanges: list[dict[str, Any]] = exchanges) -> str | None:
            i = v.get("exchange")
            return exchanges[i].get("label", "") if isinstance(i, int) and 0 <= i < len(exchanges) else None

        views.append({
            "nodeid": c["nodeid"], "outcome": c.get("outcome", ""), "duration": _seconds(c.get("duration")),
            "error": _capped(c.get("error")) if c.get("error") else None,
            "violations": [dict(v, n=i + 1, exchange_label=label(v)) for i, v in enumerate(mine)],
            "exchanges": [_exchange_view(i, ex, referenced) for i, ex in enumerate(exchanges)],
        })
    source = req.get("source") or {}
    return dict(req, anchor="req-" + rid, sources=[(k, source[k]) for k in ("seed", "openai", "decision")
                                                   if source.get(k)], check_views=views)


def _matrix(reqs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    present = Counter(r["verdict"] for r in reqs)
    columns = [v for v in VERDICTS if present.get(v) or v in ("pass", "fail")]
    caps = [c for c in CAPABILITIES if any(r["capability"] == c for r in reqs)]
    caps += sorted({r["capability"] for r in reqs} - set(caps))
    rows = []
    for cap in caps:
        mine = [r for r in reqs if r["capability"] == cap]
        counts = Counter(r["verdict"] for r in mine)
        worst = next((v for v in ("error", "fail", "unexpectedly-passing", "informational", "waived", "pass",
                                  "unsupported") if counts.get(v)), "not-run")
        rows.append({"capability": cap, "counts": [(v, counts.get(v, 0)) for v in columns],
                     "total": len(mine), "status": worst})
    return columns, rows


# the timeline's drawing area (SVG user units; the SVG scales to the card's width)
TL_W, TL_H = 1000, 300
TL_LEFT, TL_RIGHT, TL_TOP, TL_BOTTOM = 64, 16, 14, 44


def _nice_ticks(top: float, target: int = 6) -> list[float]:
    """Round tick values from 0 to at least ``top`` (about ``target`` of them)."""
    top = max(top, 1e-3)
    raw = top / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [round(i * step, 6) for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _tick_label(v: float) -> str:
    return f"{v:g} s" if v >= 1 or v == 0 else f"{v * 1000:g} ms"


def _epoch(iso: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _point_title(p: dict[str, Any]) -> str:
    """One mark's tooltip (plain text: the template escapes it)."""
    what = f"HTTP {p['status']}" if p["status"] is not None else OUTCOMES[p["outcome"]]
    took = f"took {_seconds(p['y'])}"
    if p["ttft"] is not None:
        took += f", first token {_seconds(p['ttft'])}"
    error = f" — {visible(p['error'])[:160]}" if p["error"] else ""
    return (f"{visible(p['label'])[:80]} ({'stream' if p['stream'] else 'non-stream'}): {what}, sent at "
            f"{_seconds(p['x'])}, {took}{error}")


def _timeline(results: dict[str, Any]) -> dict[str, Any]:
    """The timeline's marks, axes and legend: every exchange of the run's checks (each once) placed at when it
    was sent (x) and how long it took (y), marked by outcome; at most TIMELINE_CAP of them."""
    tl = timeline_of(results.get("checks", []), _epoch(results.get("started")))
    points = tl["points"]
    span = max([float(results.get("duration_s") or 0.0), *(p["x"] for p in points)])
    xticks = _nice_ticks(span or 1.0, target=8)
    yticks = _nice_ticks(1.04 * max([p["y"] for p in points] or [1.0]))  # the highest mark below the top
    w, h = TL_W - TL_LEFT - TL_RIGHT, TL_H - TL_TOP - TL_BOTTOM

    def px(x: float) -> float:
        return round(TL_LEFT + w * x / xticks[-1], 1)

    def py(y: float) -> float:
        return round(TL_TOP + h * (1 - y / yticks[-1]), 1)

    marks = [{"outcome": p["outcome"], "x": px(p["x"]), "y": py(p["y"]),
              "ttft": py(p["ttft"]) if p["ttft"] is not None else None, "title": _point_title(p)}
             for p in points]
    drawn = Counter(p["outcome"] for p in points)
    counts = tl["counts"]
    legend = [{"outcome": o, "words": words, "count": counts[o], "drawn": drawn.get(o, 0)}
              for o, words in OUTCOMES.items() if counts[o] or o != "not_sent"]
    summary = ", ".join(f"{row['count']} {row['words']}" for row in legend if row["count"])
    return {
        "marks": marks, "legend": legend, "dated": tl["dated"], "undated": tl["undated"],
        "drawn": len(points), "cap": TIMELINE_CAP, "streams": any(p["ttft"] is not None for p in points),
        "xticks": [{"x": px(v), "label": _tick_label(v)} for v in xticks],
        "yticks": [{"y": py(v), "label": _tick_label(v)} for v in yticks],
        "box": {"w": TL_W, "h": TL_H, "left": TL_LEFT, "right": TL_W - TL_RIGHT, "top": TL_TOP,
                "bottom": TL_H - TL_BOTTOM},
        "desc": f"{sum(counts.values())} exchanges: {summary or 'none'}.",
    }


def _latency(results: dict[str, Any]) -> dict[str, Any]:
    """results.json's ``latency``; from the run's exchanges when it is absent or of another shape (results
    written by another version of the suite)."""
    lat = results.get("latency")
    if (isinstance(lat, dict) and isinstance(lat.get("outcomes"), dict)
            and set(OUTCOMES) <= set(lat["outcomes"])
            and all(isinstance(lat.get(k), dict) and {"answered", "ttft_s", "total_s"} <= set(lat[k])
                    for k in ("stream", "non_stream"))):
        return lat
    return latency_of(results.get("checks", []))


def build_context(results: dict[str, Any]) -> dict[str, Any]:
    """The template's view of a results dict (plain data; nothing in it is marked safe)."""
    reqs = list(results.get("requirements", {}).values())
    checks = results.get("checks", [])
    code = results.get("exit_code", 1)
    groups = finding_groups(results) if "requirements" in results else {}
    listed_apart = {r["id"] for r in groups.get("informational", [])}  # MAY findings: their own section
    failures = [r for r in reqs if r["verdict"] in FAILURE_VERDICTS and r["id"] not in listed_apart]
    informational = [r for r in reqs if r["id"] in listed_apart]
    failures.sort(key=lambda r: (FAILURE_VERDICTS.index(r["verdict"]) if r["verdict"] != "fail" else -1,
                                 level_rank(r["level"])))
    caps = results.get("capabilities", {})
    cap_order = {c: i for i, c in enumerate(CAPABILITIES)}
    cap_rows = sorted(({"name": k, **v} for k, v in caps.items()),
                      key=lambda c: (bool(c.get("supported")), cap_order.get(c["name"], 99), c["name"]))
    columns, matrix = _matrix(reqs)
    counts = Counter(r["verdict"] for r in reqs)
    levels = [lvl for lvl in ("MUST", "SHOULD", "MAY") if any(r["level"] == lvl for r in reqs)]
    level_table = []
    for lvl in levels:
        rs = [r for r in reqs if r["level"] == lvl]
        p = sum(r["verdict"] == "pass" for r in rs)
        f = sum(r["verdict"] in ("fail", "informational", "error") for r in rs)
        level_table.append({"level": lvl, "pass": p, "fail": f, "other": len(rs) - p - f, "total": len(rs)})
    return {
        "r": results,
        "status": "pass" if code == 0 else ("warn" if code == 4 or results.get("interrupted")
                                            or "INCOMPLETE" in str(results.get("verdict")) else "fail"),
        "duration": _duration(results.get("duration_s")),
        "counts": [(v, counts.get(v, 0)) for v in VERDICTS if counts.get(v)],
        "total": len(reqs),
        "capabilities": cap_rows,
        "unsupported": [c["name"] for c in cap_rows if not c.get("supported")],
        "columns": columns,
        "matrix": matrix,
        "level_table": level_table,
        "requirements": reqs,
        "failures": [
            {**_failure_view(r, checks), "warning": is_warning(r, results.get("fail_on", "MUST"))}
            for r in failures
        ],
        "informational": [{**_failure_view(r, checks), "warning": False} for r in informational],
        "warnings": sum(is_warning(r, results.get("fail_on", "MUST")) for r in failures),
        "fail_on": results.get("fail_on", "MUST"),
        "failure_ids": {r["id"] for r in failures} | listed_apart,
        "profile_label": profile_label(results),
        "embedded_note": EMBEDDED_NOTE if is_embedded(results) else "",
        "level_note": explain_level_reached(
            str(results.get("level_reached", "")), str(results.get("level", "MAY")),
            partial=is_partial(results),
        ),
        "verdicts_present": [v for v in VERDICTS if counts.get(v)],
        "levels": levels,
        "capability_names": [row["capability"] for row in matrix],
        "caps": {"body": BODY_CAP, "events": EVENTS_CAP, "event_data": EVENT_DATA_CAP},
        "latency": _latency(results),
        "timeline": _timeline(results),
        "outcome_words": OUTCOMES,
    }


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """One environment per process: its compiled template is kept (compiling it took a third of a small run;
    the loader still reloads a template whose file changed)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["visible"] = visible
    env.filters["seconds"] = _seconds
    env.filters["when"] = when
    return env


def render_html(results: dict[str, Any]) -> str:
    """The report page for one results dict (deterministic: the same results give the same bytes)."""
    return _environment().get_template("report.html.j2").render(**build_context(results))


def write_html(results: dict[str, Any], report_dir: Path) -> Path:
    """Write ``report_dir/report.html`` atomically and return its path."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(report_dir / "report.html", render_html(results))
