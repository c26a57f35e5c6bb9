"""Aggregate per-check records into per-requirement verdicts, and write results.json, JUnit and summary.md.

Knows nothing about pytest or the CLI: it consumes plain dicts (the records the plugin collects).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.catalog import catalog, level_rank
from conformance.console import escape_controls
from conformance.errors import TIME_LIMIT
from conformance.evidence import exchange_key
from conformance.files import write_atomic
from conformance.latency import latency_of
from conformance.records import SkipKind, skip_kind_of

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
    "is_partial",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "TIME_LIMIT",
    "headline",
    "verdict_words",
    "not_judged",
    "not_judged_lines",
    "blocking_ids",
    "is_embedded",
    "levels_kept",
]

RESULTS_SCHEMA_VERSION = "1.0"
# the share of the run's checks a target may leave unanswered (429/503 after the retries) before the run
# is INCOMPLETE rather than judged: the rate-limited run must judge 95% of an unlimited one
UNANSWERED_SHARE = 0.05


def _sent(record: dict[str, Any]) -> bool:
    """Whether a check may have sent requests: not one skipped before it asked (unsupported, not run for the
    budget, or a replay's request its recording lacks: never judged, never a pass or a failure)."""
    kind = skip_kind_of(record)
    return kind is None or kind.sent
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
    # a run-wide record's reason first: it judged the whole run (its check only selects it)
    skipped = sorted((r for r in mine if r["outcome"] == "skipped"),
                     key=lambda r: not str(r["nodeid"]).startswith("run-wide::"))
    if skipped and len(skipped) == len(mine):
        # unsupported only when every check of it found its capability missing: one unsupported case beside
        # unanswered ones (a collapse) is no word on the requirement ("separate_reasoning needs reasoning")
        if all(skip_kind_of(r) is SkipKind.UNSUPPORTED for r in skipped):
            return "unsupported", skipped[0]["skip_reason"]
        other = next(r for r in skipped if skip_kind_of(r) is not SkipKind.UNSUPPORTED)
        return "not-run", other.get("skip_reason", "skipped")
    return "not-run", "the check ended before judging this requirement"


def _not_judged_checks(req_id: str, records: list[dict[str, Any]]) -> list[str]:
    """The checks of ``req_id`` that the run's frame kept from judging it (unanswered: throttled, or a
    collapse of the target; not run for the budget; stopped; not in a replay's recording), each as "nodeid:
    kind". An inconclusive or unsupported check is the target's own, the same every run: not among them (a
    waiver it hides would never be found stale)."""
    frame = (SkipKind.UNANSWERED, SkipKind.BUDGET, SkipKind.INTERRUPTED, SkipKind.NOT_RECORDED)
    return [f"{r['nodeid']}: {kind.value}" for r in records
            if req_id in r["requirements"] and (kind := skip_kind_of(r)) in frame]


def blocks_gate(violations: list[dict[str, Any]], *, profile: str, fail_on: str,
                waivers: dict[str, Any]) -> bool:
    """Whether one of a check's violations fails the gate: its requirement's level at ``fail_on`` or stricter
    (a MAY finding only under ``--fail-on may``), and no unexpired waiver for it. The others are findings the
    reports show as warnings (a check's test outcome under pytest: passed)."""
    today = dt.date.today()
    for v in violations:
        req = catalog().get(v["requirement"])
        if req is None:
            return True  # a requirement the catalog does not know: never hidden
        lvl = req.level_for(profile)
        waiver = waivers.get(req.id)
        # the verdict aggregate() will give this violation's requirement
        verdict = "waived" if waiver is not None and waiver_applies(waiver, today) else (
            "informational" if lvl == "MAY" else "fail")
        if fails_gate(lvl, verdict, fail_on):
            return True
    return False


def waiver_applies(waiver: dict[str, Any], today: dt.date) -> bool:
    """A waiver of the expectations file still covers a failure today (it has not expired)."""
    expires = waiver.get("expires")
    return expires is None or expires >= today


def fails_gate(level: str, verdict: str, fail_on: str) -> bool:
    """A requirement's verdict fails the gate at ``fail_on``: a failure at that level or a stricter one (an
    informational MAY finding only under ``--fail-on may``). A waived failure never does."""
    limit = level_rank(fail_on.upper())
    failing = ("fail", "informational") if limit >= level_rank("MAY") else ("fail",)
    return verdict in failing and level_rank(level) <= limit


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
            expired = not waiver_applies(waiver, today)
            if verdict == "fail" and not expired:
                verdict, reason = "waived", f"waived: {waiver.get('reason', '')} (was: {reason})"
            elif verdict == "pass" and waiver.get("intermittent"):
                reason = "passed this run; the waiver covers an intermittent deviation: " + str(
                    waiver.get("reason")
                )
            elif verdict == "pass" and (unjudged := _not_judged_checks(req.id, records)):
                # what the waiver expects may be in the checks that did not judge (a collapse left them
                # unanswered): a pass of the rest says nothing of it, and never fails a strict gate
                reason = (f"passed what was judged; {len(unjudged)} of its checks did not judge it "
                          f"({unjudged[0]}): the waived deviation may be among them: "
                          + str(waiver.get("reason", "")))
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
    blocking = [r for r in requirements.values() if fails_gate(r["level"], r["verdict"], fail_on)]
    warned = [r for r in requirements.values() if is_warning(r, fail_on)]
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


def level_reached(
    requirements: dict[str, dict[str, Any]], *, partial: bool = False, level: str = "MAY"
) -> str:
    """The highest level (MUST, SHOULD, MAY) with no failure at it or above; "none" if MUST fails.
    A waived failure is still a failure here: waivers make the gate tolerant, not the target conformant.
    ``partial`` (an interrupted or INCOMPLETE run): a level is reached only if every requirement at it and
    above, up to the run's ``level``, was judged too: a run that stopped early never claims a level whose
    requirements did not all run."""
    reached = "none"
    unjudged = ("not-run", "error") if partial else ()
    for lvl in ("MUST", "SHOULD", "MAY"):
        if partial and level_rank(lvl) > level_rank(level.upper()):
            break
        bad = [
            r
            for r in requirements.values()
            if r["level"] == lvl and r["verdict"] in ("fail", "informational", "waived", *unjudged)
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


def explain_level_reached(reached: str, level: str = "MAY", *, partial: bool = False) -> str:
    """One sentence saying what ``level_reached`` means for this run (shown wherever the level is).
    ``partial``: the run stopped early (:func:`is_partial`), and the level counts only what it judged."""
    text = _REACHED.get(reached, "")
    if not text:
        return ""
    if partial:
        if reached == "none":
            return ("the run stopped before it judged every requirement: no level has all its requirements, "
                    "and those of the stricter levels, judged with no failure")
        return ("the run stopped before it judged every requirement: the highest level at which every "
                "requirement, and every one at a stricter level, was judged with no failure")
    text = f"the highest level with no failure, waived ones included, at it or a stricter level: {text}"
    run_level = level.upper()
    if reached != "none" and level_rank(reached) > level_rank(run_level):
        text += f"; this run judged only up to {run_level}"
    return text


def is_embedded(results: dict[str, Any]) -> bool:
    """The run judged the embedded reference server (a self-test of the suite, not the user's endpoint)."""
    return bool((results.get("target") or {}).get("embedded"))


def _self_test(results: dict[str, Any]) -> str:
    """What a verdict line of a run against the embedded server ends with ("" for a real target)."""
    from conformance.target import EMBEDDED_NOTE

    return f" [{EMBEDDED_NOTE}]" if is_embedded(results) else ""


def headline(results: dict[str, Any]) -> str:
    """The verdict as every report's headline gives it: a self-test says so."""
    return results["verdict"] + _self_test(results)


_JUDGED = ("pass", "fail", "waived", "unexpectedly-passing", "informational")
_PARTIAL = ("INTERRUPTED", "INCOMPLETE")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ids(rows: list[dict[str, Any]], most: int = 3) -> str:
    ids = [r["id"] for r in rows]
    return ", ".join(ids[:most]) + (f", +{len(ids) - most} more" if len(ids) > most else "")


def verdict_words(results: dict[str, Any]) -> str:
    """The verdict in plain words, as the console's last line gives it: what fails the gate, what is only a
    warning, how much was judged (``CONFORMANT — no MUST failure; 3 SHOULD warnings; 140 of 146 requirements
    judged``). A partial run (INTERRUPTED, INCOMPLETE) or an internal error keeps the gate's own words."""
    reqs = list(results["requirements"].values())
    judged = sum(r["verdict"] in _JUDGED for r in reqs)
    tail = f"{judged} of {len(reqs)} requirements judged"
    verdict = str(results["verdict"])
    groups = finding_groups(results)
    failures = [r for r in groups["failures"] if r["verdict"] != "error"]
    fail_on = str(results.get("fail_on", "MUST")).upper()
    if verdict.startswith(_PARTIAL) or results.get("exit_code") not in (0, 1) or (
        results.get("exit_code") == 1 and not failures
    ):
        words = verdict
    elif failures:
        by = Counter(r["level"] for r in failures)
        words = "NOT CONFORMANT — " + ", ".join(
            _plural(by[lvl], f"{lvl} failure") for lvl in ("MUST", "SHOULD", "MAY") if by.get(lvl)
        ) + f" ({_ids(failures)})"
    else:
        kept = {"MUST": "no MUST failure", "SHOULD": "no MUST or SHOULD failure", "MAY": "nothing failed"}
        words = "CONFORMANT — " + kept.get(fail_on, "no MUST failure")
    extra: list[str] = []
    if not words.startswith(_PARTIAL):
        by_w = Counter(r["level"] for r in groups["warnings"])
        extra += [_plural(by_w[lvl], f"{lvl} warning") for lvl in ("MUST", "SHOULD", "MAY") if by_w.get(lvl)]
        if groups["informational"]:
            extra.append(_plural(len(groups["informational"]), "MAY finding") + " (informational)")
        if groups["waived"]:
            extra.append(f"{len(groups['waived'])} waived")
    if "requirements judged" not in words:
        extra.append(tail)
    return "; ".join([words, *extra]) + _self_test(results)


# why a requirement was not judged, from the start of its reason: (prefix, what the console says)
_NOT_JUDGED_WHY = (
    ("above the run's level", "above the run's --level"),
    ("no check for this requirement was run", "not selected (--only, or no check in this run)"),
    ("unsupported", "unsupported by the target (an optional capability it does not offer)"),
    ("inconclusive: rate-limited after", "unanswered (HTTP 429 after the retries)"),
    ("inconclusive: overloaded after", "unanswered (HTTP 503 after the retries)"),
    ("inconclusive: no answer", "unanswered (timed out, or the connection failed)"),
    ("inconclusive", "inconclusive (the answers could not decide: see the report)"),
    ("not run: budget exhausted", "not run: the budget was exhausted"),
    ("not run: the run stopped", "not run: the run stopped before their checks ran"),
    ("not recorded", "not in the recording"),
    ("internal error", "internal error of the suite"),
)


def not_judged(results: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The requirements the run did not judge, grouped by why (largest group first)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results["requirements"].values():
        if r["verdict"] in _JUDGED:
            continue
        reason = str(r.get("reason", ""))
        why = next((said for prefix, said in _NOT_JUDGED_WHY if reason.startswith(prefix)), "")
        if not why:
            why = "the check ended before judging it" if r["verdict"] == "not-run" else r["verdict"]
        groups.setdefault(why, []).append(r)
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


def not_judged_lines(results: dict[str, Any], most: int = 6) -> list[str]:
    """``not judged: N of M`` and a line per reason (with a few ids), for the console and summary.md."""
    groups = not_judged(results)
    if not groups:
        return []
    total = sum(len(rows) for _, rows in groups)
    lines = [f"not judged: {total} of {len(results['requirements'])} requirements, and why:"]
    for why, rows in groups[:most]:
        lines.append(f"  {len(rows)} {why}: {_ids(rows)}")
    if len(groups) > most:
        lines.append(f"  {sum(len(rows) for _, rows in groups[most:])} for other reasons (in the report)")
    return lines


def blocking_ids(results: dict[str, Any]) -> set[str]:
    """The requirements whose failure fails the gate at the run's ``--fail-on`` (waived ones never do)."""
    return {r["id"] for r in finding_groups(results)["failures"]}


_KEPT = {"none": "none", "MUST": "MUST", "SHOULD": "MUST and SHOULD", "MAY": "MUST, SHOULD and MAY"}


_BROKEN_AT = {"none": "MUST", "MUST": "SHOULD", "SHOULD": "MAY"}  # the level whose failure set level_reached


def only_waived_below(results: dict[str, Any]) -> bool:
    """Whether every failure at the level that bounds ``level_reached`` is waived (a pinned target's run:
    the levels are not kept, and the gate holds)."""
    broken = _BROKEN_AT.get(str(results.get("level_reached")))
    if broken is None:
        return False
    at = [r for r in results["requirements"].values()
          if r["level"] == broken and r["verdict"] in ("fail", "informational", "waived")]
    return bool(at) and all(r["verdict"] == "waived" for r in at)


def levels_kept(reached: str, level: str = "MAY", *, partial: bool = False, waived: bool = False) -> str:
    """``level_reached`` said as the levels the target kept (``MAY`` alone reads as the weakest grade), and
    why (``_REACHED``). ``partial``: the run stopped early; a level counts only where all of it was judged.
    ``waived``: the failures that bound it are all waived (said, so that it never reads against a passing
    gate)."""
    kept = _KEPT.get(reached, reached)
    if partial:
        kept = "none judged in full" if reached == "none" else kept
        return f"levels kept: {kept} (the run stopped early: a level counts only if all of it was judged)"
    why = _REACHED.get(reached, "")
    if waived and why:
        why = why.replace(" failed", " failed, waived", 1) if reached == "none" else why + ", waived"
    text = f"levels kept: {kept} ({why})"
    if reached != "none" and level_rank(reached) > level_rank(level.upper()):
        text += f"; this run judged only up to {level.upper()}"
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
def _visible(m: re.Match[str]) -> str:
    """A character that must not be written as itself, written as a visible escape (\\x1b, \\u202e)."""
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _md(text: str) -> str:
    """Target text made inert in Markdown: no links, images, HTML, code spans or control characters."""
    text = escape_controls(" ".join(text.split("\n")))  # the terminal's escaper: one set, one spelling
    return _MD_SPECIAL.sub(r"\\\1", text)


def render_summary(results: dict[str, Any]) -> str:
    reqs = results["requirements"]
    lines = [f"# chat-conformance: {headline(results)}", ""]
    t = results["target"]
    reached = results["level_reached"]
    profile = profile_label(results).replace("`", "'")
    lines.append(
        f"Target `{t['base_url']}`, model `{t['model']}`, profile `{profile}`, level reached: **{reached}** "
        f"({explain_level_reached(reached, results.get('level', 'MAY'), partial=is_partial(results))})."
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
    why_not = not_judged_lines(results)
    if why_not:
        lines.append("## Not judged, and why")
        lines.append("")
        lines += [f"- {_md(line.strip())}" for line in why_not[1:]]
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


def _blocks(check: dict[str, Any], blocking: set[str]) -> bool:
    """A check is a failed test case exactly when one of its violations fails the gate."""
    return check["outcome"] == "failed" and any(v["requirement"] in blocking for v in check["violations"])


def render_junit(results: dict[str, Any]) -> str:
    """JUnit XML whose failed cases are exactly what fails the gate at ``--fail-on``: a finding below it
    (a warning, an informational MAY finding) or a waived one is a passing case that says so in its
    ``system-out`` and a ``warning`` property, never a red test beside a green job."""
    checks = results["checks"]
    blocking = blocking_ids(results)
    suite = ET.Element(
        "testsuite",
        name="chat-conformance" + (" (self-test: embedded reference server)" if is_embedded(results) else ""),
        tests=str(len(checks)),
        failures=str(sum(_blocks(c, blocking) for c in checks)),
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
        if c["outcome"] == "failed" and not _blocks(c, blocking):
            reqs = results["requirements"]
            for v in c["violations"]:
                r = reqs.get(v["requirement"], {})
                kind = {"waived": "waived", "informational": "MAY finding, informational"}.get(
                    str(r.get("verdict")), f"{r.get('level', '?')} warning")
                ET.SubElement(props, "property", name="warning", value=f"{v['requirement']} ({kind})")
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(
                f"finding that does not fail the gate (--fail-on {results.get('fail_on', 'MUST').lower()}): "
                f"{v['requirement']} at {v['path']}: {v['message']}"
                for v in c["violations"]
            )
        elif c["outcome"] == "failed":
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
    if is_partial(results):
        # a run that stopped early fails the job: one case says so, so that no dashboard shows it green
        case = ET.SubElement(suite, "testcase", classname="chat-conformance",
                             name="the run judged everything")
        error = ET.SubElement(case, "error", message=headline(results)[:1000])
        error.text = "; ".join(results.get("notes", []))
        suite.set("tests", str(len(checks) + 1))
        suite.set("errors", str(int(suite.get("errors", "0")) + 1))
    suite_props = ET.Element("properties")
    for name, value in (("verdict", headline(results)), ("exit_code", str(results.get("exit_code", ""))),
                        ("fail_on", str(results.get("fail_on", "MUST")))):
        ET.SubElement(suite_props, "property", name=name, value=value)
    suite.insert(0, suite_props)
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
    stopped_by: str | None = None,
    selected: set[str] | None = None,
) -> dict[str, Any]:
    """``stopped_by``: what ended the run before its end, if anything: ``"SIGINT"`` (Ctrl-C; also what
    ``interrupted=True`` alone means), ``"SIGTERM"`` (a CI job's timeout or cancel), or :data:`TIME_LIMIT`
    (``--max-duration``). Such a run, like one whose budget ran out, is never CONFORMANT
    (:func:`_partial_verdict`). ``selected``: the requirements of the checks the run selected (None: all),
    so that a stopped run tells the ones it did not reach from the ones it deselected."""
    from conformance.specfiles import spec_hash

    if stopped_by is None and interrupted:
        stopped_by = "SIGINT"
    interrupted = stopped_by in EXIT_INTERRUPTED
    reqs = aggregate(records, profile=profile, level=level, waivers=waivers)
    code, verdict = gate(reqs, records, strict_waivers=strict_waivers, fail_on=fail_on)
    code, verdict = _unanswered_gate(records, code, verdict)
    code, verdict, partial = _partial_verdict(code, verdict, reqs, records, stopped_by)
    if partial:
        _say_stopped(reqs, records, stopped_by, selected)
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
        "level_reached": level_reached(reqs, partial=partial, level=level),
        "interrupted": interrupted,
        "notes": notes or [],
        "cost": cost,
        "latency": latency_of(records),  # issue 23 (8): the answered exchanges' TTFT and total, p50/p95
        "counts": dict(Counter(r["verdict"] for r in reqs.values())),
        "requirements": reqs,
        "checks": records,
    }


# A run that stopped before its end (spec/DECISIONS.md#partial-runs). Stopped by a signal: INTERRUPTED, exit
# 128 + the signal's number as a shell reports it (130 Ctrl-C, 143 SIGTERM). Stopped by its budget
# (--max-requests, --max-tokens-total), its time limit (--max-duration) or left unanswered past
# UNANSWERED_SHARE: INCOMPLETE, exit 5 (not 1: no requirement failed; a CI job may retry it).
EXIT_INCOMPLETE = 5
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}
_STOPPED_BY = {"SIGINT": "Ctrl-C (SIGINT)", "SIGTERM": "SIGTERM (a CI job's timeout or cancel)"}


def is_partial(results: dict[str, Any]) -> bool:
    """The run stopped before its end (INTERRUPTED, or INCOMPLETE): its verdict covers what it judged."""
    return bool(results.get("interrupted")) or "INCOMPLETE" in str(results.get("verdict", ""))


def _gate_details(verdict: str) -> str:
    """What a passing gate's line says beside the word CONFORMANT (waivers, warnings, undecided ones)."""
    rest = verdict.removeprefix("CONFORMANT").strip(" ;")
    return f" ({rest})" if rest else ""


def _partial_verdict(
    code: int, verdict: str, reqs: dict[str, dict[str, Any]], records: list[dict[str, Any]],
    stopped_by: str | None,
) -> tuple[int, str, bool]:
    """(exit code, verdict, partial): a run that did not judge everything it set out to never says CONFORMANT
    and says how much it judged. Interrupted: INTERRUPTED whatever it found (exit 130/143). Budget or time
    limit: INCOMPLETE (exit 5) unless a failure was found (a failure found stays one: exit 1 or 4, the
    verdict says the run was cut short)."""
    judged = sum(r["verdict"] in _JUDGED for r in reqs.values())
    ran = f"{judged} of {len(reqs)} requirements judged"
    body = f"none of them fails the gate{_gate_details(verdict)}" if code == 0 else verdict
    if stopped_by in EXIT_INTERRUPTED:
        return EXIT_INTERRUPTED[stopped_by], f"INTERRUPTED by {_STOPPED_BY[stopped_by]}: {ran}; {body}", True
    if code == EXIT_INCOMPLETE:  # too many checks unanswered (_unanswered_gate)
        return code, f"{verdict}; {ran}", True
    if stopped_by == TIME_LIMIT:
        why = "the run reached its time limit (--max-duration) before every check ran"
    elif _budget_stopped(records):
        why = "the run's budget was exhausted before every check ran"
    elif code == 0 and judged == 0 and any(
            str(r.get("reason", "")).startswith(_SET_OUT_BUT_UNJUDGED)
            and "judged run-wide" not in str(r.get("reason", ""))  # a placeholder: the run-wide judge's own
            for r in reqs.values()):
        # it set out to judge requirements (a check ran) and judged none: no verdict on the contract
        why = "no requirement it set out to judge could be judged (see why below)"
    else:
        return code, verdict, False
    if code == 0:
        return EXIT_INCOMPLETE, f"INCOMPLETE: {why}: {ran}; {body}", True
    return code, f"{verdict}; INCOMPLETE: {why}: {ran}", True


# the reasons of a requirement a check of the run set out to judge and did not (not: deselected, above the
# run's level, unsupported by the target, or absent from the recording a replay was given: what a recording
# holds is the user's choice, said as "not in the recording", spec/DECISIONS.md#replay-own-answers)
_SET_OUT_BUT_UNJUDGED = ("inconclusive", "not run", "internal error")


def _budget_stopped(records: list[dict[str, Any]]) -> bool:
    """A check was not run because the run's budget (--max-requests, --max-tokens-total) ran out."""
    return any(skip_kind_of(r) is SkipKind.BUDGET for r in records)


def _say_stopped(
    reqs: dict[str, dict[str, Any]], records: list[dict[str, Any]], stopped_by: str | None,
    selected: set[str] | None,
) -> None:
    """A partial run: a selected requirement none of whose checks ran was not reached, not deselected."""
    how = {"SIGINT": "interrupted by Ctrl-C", "SIGTERM": "interrupted by SIGTERM",
           TIME_LIMIT: "its --max-duration reached"}.get(stopped_by or "")
    if how is None:
        if not _budget_stopped(records):
            return
        how = "its budget exhausted"
    for r in reqs.values():
        if (r["verdict"] == "not-run" and r["reason"].startswith("no check for this requirement was run")
                and (selected is None or r["id"] in selected)):
            r["reason"] = f"not run: the run stopped ({how}) before its checks ran"


def _unanswered_gate(records: list[dict[str, Any]], code: int, verdict: str) -> tuple[int, str]:
    """Checks the target left unanswered (429/503 after the retries: inconclusive, never judged) are said
    in the verdict; past ``UNANSWERED_SHARE`` of the checks that ran, a run that would pass is INCOMPLETE
    (exit 5): what it could not judge is too much to call it conformant (spec/DECISIONS.md#rate-limits)."""
    unanswered = [r for r in records if skip_kind_of(r) is SkipKind.UNANSWERED]
    if not unanswered:
        return code, verdict
    ran = [r for r in records if _sent(r) and not r["nodeid"].startswith("run-wide::")]  # those send nothing
    said = (f"{len(unanswered)} of {len(ran)} check(s) unanswered (HTTP 429/503 after the retries, no "
            "answer, or a collapse of the target: not judged)")
    collapsed = any(v.get("requirement") == "TARGET-AVAILABLE"
                    for r in records for v in r.get("violations", []))
    if code == 0 and len(unanswered) > UNANSWERED_SHARE * len(ran):
        if collapsed:  # the collapse is the finding, said first (TARGET-AVAILABLE has its evidence)
            return EXIT_INCOMPLETE, (f"INCOMPLETE: the target stopped answering under the run's load "
                                     f"(TARGET-AVAILABLE); {said}: retry with a lower --concurrency"
                                     f"{_gate_details(verdict)}")
        # throttled (a 429/503 survived the retries) or not answered at all: told by the exchanges, not words
        throttled = any(ex.get("status") in (429, 503) for r in unanswered for ex in r.get("exchanges", []))
        hint = ("retry later, with fewer workers (-n) or a lower --rate-limit" if throttled else
                "the target did not answer in time: retry later, or with a longer --timeout/--idle-timeout")
        return EXIT_INCOMPLETE, f"INCOMPLETE: {said}: {hint}{_gate_details(verdict)}"
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
        written.append(write_atomic(report_dir / name, text))
    return written
