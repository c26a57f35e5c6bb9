"""Aggregate per-check records into per-requirement verdicts, and write results.json, JUnit and summary.md.

Knows nothing about pytest or the CLI: it consumes plain dicts (the records the plugin collects).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.catalog import catalog, level_rank
from conformance.evidence import exchange_key

__all__ = [
    "RESULTS_SCHEMA_VERSION",
    "VERDICTS",
    "aggregate",
    "gate",
    "write_all",
    "render_summary",
    "render_junit",
    "cost_of",
    "exchange_usage",
    "explain_level_reached",
    "profile_label",
    "finding_groups",
]

RESULTS_SCHEMA_VERSION = "1.0"
# the share of the run's checks a target may leave unanswered (429/503 after the retries) before the run
# is INCOMPLETE rather than judged: the rate-limited run must judge 95% of an unlimited one
UNANSWERED_SHARE = 0.05
_UNANSWERED = ("inconclusive: rate-limited after", "inconclusive: overloaded after")
VERDICTS = (
    "pass",
    "fail",
    "waived",
    "unexpectedly-passing",
    "unsupported",
    "not-run",
    "informational",
    "error",
)


def _verdict_for(req_id: str, level: str, records: list[dict[str, Any]]) -> tuple[str, str]:
    """(verdict, reason) of one requirement over the records of the checks that judge it."""
    mine = [r for r in records if req_id in r["requirements"]]
    if not mine:
        return "not-run", "no check for this requirement was run (deselected or filtered)"
    own = [v for r in mine for v in r.get("violations", []) if v["requirement"] == req_id]
    if own:
        return ("informational" if level == "MAY" else "fail"), own[0]["message"]
    errors = [r for r in mine if r["outcome"] == "error"]
    if errors:
        return "error", "internal error of the suite in " + errors[0]["nodeid"]
    # a pass needs a check that ran to its end (passed, or failed on another requirement) and judged this one
    judged = [r for r in mine if r["outcome"] in ("passed", "failed") and req_id in r.get("judged", [])]
    if judged:
        return "pass", ""
    skipped = [r for r in mine if r["outcome"] == "skipped"]
    if skipped and len(skipped) == len(mine):
        for r in skipped:
            if r.get("skip_reason", "").startswith("unsupported"):
                return "unsupported", r["skip_reason"]
        return "not-run", skipped[0].get("skip_reason", "skipped")
    return "not-run", "the check ended before judging this requirement"


def aggregate(
    records: list[dict[str, Any]],
    *,
    profile: str,
    level: str,
    waivers: dict[str, dict[str, Any]] | None = None,
    today: dt.date | None = None,
) -> dict[str, dict[str, Any]]:
    """Per requirement: id, level, capability, statement, verdict, reason, checks (nodeids)."""
    waivers = waivers or {}
    today = today or dt.date.today()
    out: dict[str, dict[str, Any]] = {}
    for req in catalog().values():
        if not req.applies_to(profile):
            continue
        lvl = req.level_for(profile)
        verdict, reason = _verdict_for(req.id, lvl, records)
        if level_rank(lvl) > level_rank(level) and verdict == "not-run":
            reason = f"above the run's level ({level.upper()})"
        waiver = waivers.get(req.id)
        expired = False
        if waiver is not None:
            expires = waiver.get("expires")
            expired = expires is not None and expires < today
            if verdict == "fail" and not expired:
                verdict, reason = "waived", f"waived: {waiver.get('reason', '')} (was: {reason})"
            elif verdict == "pass" and waiver.get("intermittent"):
                reason = "passed this run; the waiver covers an intermittent deviation: " + str(
                    waiver.get("reason")
                )
            elif verdict == "pass":
                verdict, reason = (
                    "unexpectedly-passing",
                    f"a waiver expects a failure: {waiver.get('reason', '')}",
                )
            elif verdict == "fail" and expired:
                reason = f"waiver expired on {expires}: {reason}"
        out[req.id] = {
            "id": req.id,
            "level": lvl,
            "capability": req.capability,
            "statement": req.statement,
            "source": req.source,
            "verdict": verdict,
            "reason": reason,
            "waiver_expired": expired,
            "checks": sorted({r["nodeid"] for r in records if req.id in r["requirements"]}),
        }
    return out


def gate(
    requirements: dict[str, dict[str, Any]],
    records: list[dict[str, Any]],
    *,
    strict_waivers: bool = False,
    fail_on: str = "must",
) -> tuple[int, str]:
    """(exit code, one-line verdict): 0 conformant, 1 not conformant, 4 internal error.

    Only failures at ``fail_on`` or a stricter level fail the gate (MUST by default); failures at looser
    levels are warnings, said in the verdict line. A MAY "failure" is informational and never fails it."""
    internal = [r for r in records if r["outcome"] == "error"]
    if internal:
        return 4, f"internal error of the suite in {len(internal)} check(s); the verdict is incomplete"
    limit = level_rank(fail_on.upper())
    failing = ("fail", "informational") if limit >= level_rank("MAY") else ("fail",)
    fails = [r for r in requirements.values() if r["verdict"] in failing]
    blocking = [r for r in fails if level_rank(r["level"]) <= limit]
    warned = [r for r in fails if level_rank(r["level"]) > limit]
    warning = ""
    if warned:
        by_w = Counter(r["level"] for r in warned)
        warning = "; warnings: " + ", ".join(f"{n} {lvl}" for lvl, n in sorted(by_w.items())) + (
            " requirement(s) failed"
        )
    if blocking:
        by = Counter(r["level"] for r in blocking)
        return 1, "NOT CONFORMANT: " + ", ".join(
            f"{n} {lvl}" for lvl, n in sorted(by.items())
        ) + " requirement(s) failed" + warning
    if strict_waivers:
        unexpected = [r for r in requirements.values() if r["verdict"] == "unexpectedly-passing"]
        if unexpected:
            return 1, f"NOT CONFORMANT (strict waivers): {len(unexpected)} waived requirement(s) now pass"
    waived = sum(r["verdict"] == "waived" for r in requirements.values())
    line = f"CONFORMANT with {waived} waived failure(s)" if waived else "CONFORMANT"
    line += warning
    # requirements whose checks ran but could not decide (inconclusive, stopped early) are said, not hidden
    undecided = sum(r["verdict"] == "not-run" and bool(r["checks"]) for r in requirements.values())
    if undecided:
        line += f"; {undecided} requirement(s) could not be judged"
    return 0, line


def is_warning(requirement: dict[str, Any], fail_on: str) -> bool:
    """A failed requirement whose level is looser than the gate's ``--fail-on``: reported, not blocking."""
    return requirement["verdict"] == "fail" and level_rank(requirement["level"]) > level_rank(fail_on)


def level_reached(requirements: dict[str, dict[str, Any]]) -> str:
    """The highest level (MUST, SHOULD, MAY) with no failure at it or above; "none" if MUST fails.
    A waived failure is still a failure here: waivers make the gate tolerant, not the target conformant."""
    reached = "none"
    for lvl in ("MUST", "SHOULD", "MAY"):
        bad = [
            r
            for r in requirements.values()
            if r["level"] == lvl and r["verdict"] in ("fail", "informational", "waived")
        ]
        if bad:
            break
        reached = lvl
    return reached


_REACHED = {
    "none": "a MUST requirement failed",
    "MUST": "no MUST requirement failed, a SHOULD one did",
    "SHOULD": "no MUST or SHOULD requirement failed, a MAY finding was reported",
    "MAY": "nothing failed at any level",
}


def explain_level_reached(reached: str, level: str = "MAY") -> str:
    """One sentence saying what ``level_reached`` means for this run (shown wherever the level is)."""
    text = _REACHED.get(reached, "")
    if not text:
        return ""
    text = f"the highest level with no failure, waived ones included, at it or a stricter level: {text}"
    run_level = level.upper()
    if reached != "none" and level_rank(reached) > level_rank(run_level):
        text += f"; this run judged only up to {run_level}"
    return text


def profile_label(results: dict[str, Any]) -> str:
    """The profile as the user named it: ``seed``, ``openai``, or a user profile's name with its file and
    the built-in profile it extends (``acme (profiles/acme.toml, extends seed)``)."""
    base = str(results.get("profile", "seed"))
    target = results.get("target") or {}
    given = str(target.get("profile") or base)
    if given == base:
        return base
    name = target.get("profile_name") or Path(given).stem
    return f"{name} ({given}, extends {base})"


def finding_groups(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The requirements a report lists, by section: ``failures`` (fail, error, and informational MAY findings
    when ``--fail-on may`` makes them block), ``warnings`` (failed below the gate's level), ``informational``
    (MAY findings that never fail the gate) and ``waived``."""
    fail_on = str(results.get("fail_on", "MUST")).upper()
    may_blocks = fail_on == "MAY"
    groups: dict[str, list[dict[str, Any]]] = {
        "failures": [], "warnings": [], "informational": [], "waived": []
    }
    for r in results["requirements"].values():
        v = r["verdict"]
        if v == "informational" and not may_blocks:
            groups["informational"].append(r)
        elif v in ("fail", "error", "informational"):
            groups["warnings" if is_warning(r, fail_on) else "failures"].append(r)
        elif v == "waived":
            groups["waived"].append(r)
    return groups


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    """A character that must not be written as itself, written as a visible escape (\\x1b, \\u202e)."""
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _md(text: str) -> str:
    """Target text made inert in Markdown: no links, images, HTML, code spans or control characters."""
    text = _CONTROL.sub(_visible, text.replace("\n", " "))
    return _MD_SPECIAL.sub(r"\\\1", text)


def render_summary(results: dict[str, Any]) -> str:
    reqs = results["requirements"]
    lines = [f"# chat-conformance: {results['verdict']}", ""]
    t = results["target"]
    reached = results["level_reached"]
    profile = profile_label(results).replace("`", "'")
    lines.append(
        f"Target `{t['base_url']}`, model `{t['model']}`, profile `{profile}`, level reached: **{reached}** "
        f"({explain_level_reached(reached, results.get('level', 'MAY'))})."
    )
    lines.append("")
    counts = Counter(r["verdict"] for r in reqs.values())
    lines.append("| verdict | requirements |")
    lines.append("|---|---|")
    for v in VERDICTS:
        if counts.get(v):
            lines.append(f"| {v} | {counts[v]} |")
    lines.append("")
    lines.append("| level | pass | fail | other |")
    lines.append("|---|---|---|---|")
    for lvl in ("MUST", "SHOULD", "MAY"):
        rs = [r for r in reqs.values() if r["level"] == lvl]
        p = sum(r["verdict"] == "pass" for r in rs)
        f = sum(r["verdict"] in ("fail", "informational") for r in rs)
        lines.append(f"| {lvl} | {p} | {f} | {len(rs) - p - f} |")
    lines.append("")
    fail_on = results.get("fail_on", "MUST")
    groups = finding_groups(results)
    for title, rows in (
        ("Failures", groups["failures"]),
        (f"Warnings (failed below the gate's level, --fail-on {fail_on.lower()})", groups["warnings"]),
        ("Informational (MAY findings: reported, they do not fail the gate)", groups["informational"]),
        ("Waived (known failures the expectations file accepts)", groups["waived"]),
    ):
        if rows:
            lines.append(f"## {title}")
            lines.append("")
            for r in rows:
                reason = _md(r["reason"])
                lines.append(f"- **{r['id']}** ({r['level']}, {r['capability']}): {reason}")
            lines.append("")
    unsupported = [r for r in reqs.values() if r["verdict"] == "unsupported"]
    if unsupported:
        lines.append("## Unsupported")
        lines.append("")
        for r in unsupported:
            lines.append(f"- {r['id']}: {_md(r['reason'])}")
        lines.append("")
    c = results["cost"]
    lines.append(
        f"Cost: {c['requests']} requests, {c['prompt_tokens']} prompt + {c['completion_tokens']} "
        f"completion tokens, {c['retries']} retries; {results['duration_s']:.1f} s."
    )
    return "\n".join(lines) + "\n"


def render_junit(results: dict[str, Any]) -> str:
    checks = results["checks"]
    suite = ET.Element(
        "testsuite",
        name="chat-conformance",
        tests=str(len(checks)),
        failures=str(sum(c["outcome"] == "failed" for c in checks)),
        errors=str(sum(c["outcome"] == "error" for c in checks)),
        skipped=str(sum(c["outcome"] == "skipped" for c in checks)),
        time=f"{results['duration_s']:.3f}",
    )
    for c in checks:
        mod, _, name = c["nodeid"].rpartition("::")
        case = ET.SubElement(
            suite,
            "testcase",
            classname=mod.replace("/", ".").removesuffix(".py"),
            name=name,
            time=f"{c.get('duration', 0.0):.3f}",
        )
        props = ET.SubElement(case, "properties")
        for rid in c["requirements"]:
            ET.SubElement(props, "property", name="requirement", value=rid)
        if c["outcome"] == "failed":
            msg = "; ".join(f"[{v['requirement']}] {v['message']}" for v in c["violations"]) or "failed"
            el = ET.SubElement(case, "failure", message=msg[:1000])
            el.text = "\n".join(
                f"{v['requirement']} at {v['path']}: expected {v['expected']}, received {v['received']}"
                for v in c["violations"]
            )
        elif c["outcome"] == "error":
            el = ET.SubElement(case, "error", message="internal error of the suite")
            el.text = c.get("error", "")
        elif c["outcome"] == "skipped":
            ET.SubElement(case, "skipped", message=c.get("skip_reason", ""))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return _xml_safe(ET.tostring(root, encoding="unicode", xml_declaration=True)) + "\n"


# characters XML 1.0 cannot carry (target text may hold any of them): shown as visible escapes instead
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    return _XML_INVALID.sub(_visible, text)


def build_results(
    records: list[dict[str, Any]],
    *,
    target: dict[str, Any],
    profile: str,
    level: str,
    started: float,
    finished: float,
    cost: dict[str, Any],
    capabilities: dict[str, Any],
    waivers: dict[str, dict[str, Any]] | None = None,
    strict_waivers: bool = False,
    interrupted: bool = False,
    notes: list[str] | None = None,
    fail_on: str = "must",
) -> dict[str, Any]:
    from conformance.specfiles import spec_hash

    reqs = aggregate(records, profile=profile, level=level, waivers=waivers)
    code, verdict = gate(reqs, records, strict_waivers=strict_waivers, fail_on=fail_on)
    budget_stops = [r for r in records if r.get("skip_reason", "").startswith("not run: budget exhausted")]
    if budget_stops and code == 0:
        verdict, code = "INCOMPLETE: the run's budget was exhausted before every check ran", 1
    code, verdict = _unanswered_gate(records, code, verdict)
    if interrupted:
        verdict = "INTERRUPTED: " + verdict
        code = code or 1
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "suite_version": __version__,
        "spec_hash": spec_hash(),
        "profile": profile,
        "level": level.upper(),
        "fail_on": fail_on.upper(),
        "target": target,
        "capabilities": capabilities,
        "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
        "finished": dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(),
        "duration_s": round(finished - started, 3),
        "verdict": verdict,
        "exit_code": code,
        "level_reached": level_reached(reqs),
        "interrupted": interrupted,
        "notes": notes or [],
        "cost": cost,
        "counts": dict(Counter(r["verdict"] for r in reqs.values())),
        "requirements": reqs,
        "checks": records,
    }


def _unanswered_gate(records: list[dict[str, Any]], code: int, verdict: str) -> tuple[int, str]:
    """Checks the target left unanswered (429/503 after the retries: inconclusive, never judged) are said
    in the verdict; past ``UNANSWERED_SHARE`` of the checks that ran, a run that would pass is INCOMPLETE
    (exit 1): what it could not judge is too much to call it conformant (spec/DECISIONS.md#rate-limits)."""
    unanswered = [r for r in records if r.get("skip_reason", "").startswith(_UNANSWERED)]
    if not unanswered:
        return code, verdict
    ran = [r for r in records if not r.get("skip_reason", "").startswith(("unsupported", "not run"))
           and not r["nodeid"].startswith("run-wide::")]  # the run-wide records send nothing
    said = (f"{len(unanswered)} of {len(ran)} check(s) unanswered (HTTP 429/503 after the retries, "
            "not judged)")
    if code == 0 and len(unanswered) > UNANSWERED_SHARE * len(ran):
        return 1, (f"INCOMPLETE: {said}: retry later, with fewer workers (-n) or a lower --rate-limit "
                   f"(was: {verdict})")
    return code, f"{verdict}; {said}"


def cost_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, retries and tokens of the exchanges in ``records`` (a shared exchange counted once)."""
    requests = retries = prompt = completion = 0
    seen: set[str] = set()
    for r in records:
        for ex in r["exchanges"]:
            # a shared exchange is in the evidence of every check that judged it: count it once
            key = exchange_key(ex)
            if key in seen:
                continue
            seen.add(key)
            requests += 1 + ex.get("retries", 0)
            retries += ex.get("retries", 0)
            usage = exchange_usage(ex)
            prompt += usage.get("prompt_tokens", 0) or 0
            completion += usage.get("completion_tokens", 0) or 0
    return {
        "requests": requests,
        "retries": retries,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def exchange_usage(ex: dict[str, Any]) -> dict[str, Any]:
    """The usage object of a recorded exchange (its body, or the last stream chunk carrying one), or {}."""
    if ex.get("stream"):
        for ev in reversed(ex.get("events", [])):
            j = ev.get("json")
            if isinstance(j, dict) and isinstance(j.get("usage"), dict):
                return j["usage"]
        return {}
    try:
        body = json.loads(ex.get("body_text") or "")
    except ValueError:
        return {}
    u = body.get("usage") if isinstance(body, dict) else None
    return u if isinstance(u, dict) else {}


def write_all(results: dict[str, Any], report_dir: Path) -> list[Path]:
    """Write results.json, junit.xml and summary.md atomically; return the paths written."""
    report_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("results.json", json.dumps(results, indent=1, ensure_ascii=False)),
        ("junit.xml", render_junit(results)),
        ("summary.md", render_summary(results)),
    ):
        path = report_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
