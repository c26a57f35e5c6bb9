"""Verdicts per requirement, the gate's exit code, waivers, and the JUnit/summary writers."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import UsageError
from conformance.expectations import load_expectations
from conformance.results import aggregate, build_results, gate, render_junit, render_summary


def rec(
    nodeid: str,
    reqs: list[str],
    outcome: str = "passed",
    judged: list[str] | None = None,
    violations: list[dict[str, Any]] | None = None,
    skip_reason: str = "",
    error: str = "",
) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "requirements": reqs,
        "outcome": outcome,
        "skip_reason": skip_reason,
        "error": error,
        "duration": 0.01,
        "judged": reqs if judged is None else judged,
        "violations": violations or [],
        "exchanges": [],
    }


def viol(req: str, message: str = "broken") -> dict[str, Any]:
    return {
        "requirement": req,
        "message": message,
        "path": "$",
        "expected": "a",
        "received": "b",
        "exchange": None,
    }


def verdicts(records: list[dict[str, Any]], **kw: Any) -> dict[str, str]:
    return {k: v["verdict"] for k, v in aggregate(records, profile="seed", level="may", **kw).items()}


def test_pass_fail_and_own_reason() -> None:
    records = [
        rec(
            "t1",
            ["CORE-OBJECT", "CORE-ID-PRESENT"],
            "failed",
            violations=[viol("CORE-ID-PRESENT", "id missing"), viol("CORE-OBJECT", "wrong object")],
        )
    ]
    out = aggregate(records, profile="seed", level="may")
    assert out["CORE-OBJECT"]["verdict"] == "fail"
    assert out["CORE-OBJECT"]["reason"] == "wrong object"  # its own violation, not the check's first
    assert out["CORE-ID-PRESENT"]["reason"] == "id missing"
    assert verdicts([rec("t1", ["CORE-OBJECT"])])["CORE-OBJECT"] == "pass"


def test_a_may_failure_is_informational_and_does_not_fail_the_gate() -> None:
    records = [
        rec("t", ["CORE-CONTEXT-SIZE-PUBLISHED"], "failed", violations=[viol("CORE-CONTEXT-SIZE-PUBLISHED")])
    ]
    reqs = aggregate(records, profile="seed", level="may")
    assert reqs["CORE-CONTEXT-SIZE-PUBLISHED"]["verdict"] == "informational"
    assert gate(reqs, records)[0] == 0


def test_the_gate_fails_on_must_by_default_and_widens_with_fail_on() -> None:
    # CORE-MODEL-MATCHES is a SHOULD, CORE-OBJECT a MUST, CORE-CONTEXT-SIZE-PUBLISHED a MAY
    should = [rec("s", ["CORE-MODEL-MATCHES"], "failed", violations=[viol("CORE-MODEL-MATCHES")])]
    reqs = aggregate(should, profile="seed", level="may")
    code, line = gate(reqs, should)
    assert code == 0
    assert line == "CONFORMANT; warnings: 1 SHOULD requirement(s) failed"
    assert gate(reqs, should, fail_on="should") == (1, "NOT CONFORMANT: 1 SHOULD requirement(s) failed")
    both = [*should, rec("m", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT")])]
    reqs = aggregate(both, profile="seed", level="may")
    assert gate(reqs, both) == (
        1,
        "NOT CONFORMANT: 1 MUST requirement(s) failed; warnings: 1 SHOULD requirement(s) failed",
    )
    may_req = "CORE-CONTEXT-SIZE-PUBLISHED"
    may = [rec("y", [may_req], "failed", violations=[viol(may_req)])]
    reqs = aggregate(may, profile="seed", level="may")
    assert gate(reqs, may, fail_on="should")[0] == 0
    assert gate(reqs, may, fail_on="may") == (1, "NOT CONFORMANT: 1 MAY requirement(s) failed")


def test_summary_lists_warnings_apart_from_failures() -> None:
    records = [
        rec("s", ["CORE-MODEL-MATCHES"], "failed", violations=[viol("CORE-MODEL-MATCHES", "other model")]),
        rec("m", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT", "wrong object")]),
    ]
    res = build_results(
        records,
        target={"base_url": "http://x/v1", "model": "m", "profile": "seed"},
        profile="seed",
        level="may",
        started=0.0,
        finished=1.0,
        cost={"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0},
        capabilities={},
    )
    assert res["fail_on"] == "MUST" and res["exit_code"] == 1
    text = render_summary(res)
    failures, _, warnings = text.partition("## Warnings (failed below the gate's level, --fail-on must)")
    assert "CORE-OBJECT" in failures and "CORE-MODEL-MATCHES" not in failures
    assert "CORE-MODEL-MATCHES" in warnings and "CORE-OBJECT" not in warnings


def test_unsupported_only_when_every_check_of_it_was_skipped_as_unsupported() -> None:
    skipped = rec("a", ["TOOLS-CALL-SHAPE"], "skipped", judged=[], skip_reason="unsupported: tools: 400")
    assert verdicts([skipped])["TOOLS-CALL-SHAPE"] == "unsupported"
    ran = rec("b", ["TOOLS-CALL-SHAPE"], "failed", judged=[], violations=[viol("ERROR-NO-5XX")])
    assert verdicts([skipped, ran])["TOOLS-CALL-SHAPE"] == "not-run"
    # vLLM fell over mid-run: one field's case unsupported, the others unanswered: not "unsupported"
    lost = rec("c", ["TOOLS-CALL-SHAPE"], "skipped", judged=[], skip_reason="inconclusive: no answer (x)")
    lost["skip_kind"] = "unanswered"
    out = aggregate([skipped, lost], profile="seed", level="may")["TOOLS-CALL-SHAPE"]
    assert (out["verdict"], out["reason"]) == ("not-run", "inconclusive: no answer (x)")


def test_not_judged_is_not_a_pass() -> None:
    out = aggregate(
        [
            rec(
                "t",
                ["CORE-OBJECT", "CORE-ID-PRESENT"],
                "failed",
                judged=["CORE-OBJECT"],
                violations=[viol("CORE-OBJECT")],
            )
        ],
        profile="seed",
        level="may",
    )
    assert out["CORE-ID-PRESENT"]["verdict"] == "not-run"
    assert out["USAGE-PRESENT"]["verdict"] == "not-run"  # no check ran for it


def test_internal_error_is_never_blamed_on_the_target() -> None:
    records = [rec("t", ["CORE-OBJECT"], "error", judged=[], error="KeyError: 'x'")]
    reqs = aggregate(records, profile="seed", level="may")
    assert reqs["CORE-OBJECT"]["verdict"] == "error"
    code, line = gate(reqs, records)
    assert code == 4 and "internal error of the suite" in line


def test_waivers_expiry_and_strict_mode() -> None:
    failing = [rec("t", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT")])]
    passing = [rec("t", ["CORE-OBJECT"])]
    today = dt.date(2026, 11, 25)
    live = {"CORE-OBJECT": {"reason": "known", "expires": dt.date(2027, 1, 1)}}
    expired = {"CORE-OBJECT": {"reason": "known", "expires": dt.date(2026, 1, 1)}}
    reqs = aggregate(failing, profile="seed", level="may", waivers=live, today=today)
    assert reqs["CORE-OBJECT"]["verdict"] == "waived" and gate(reqs, failing)[0] == 0
    reqs = aggregate(failing, profile="seed", level="may", waivers=expired, today=today)
    assert (
        reqs["CORE-OBJECT"]["verdict"] == "fail"
        and "waiver expired on 2026-01-01" in reqs["CORE-OBJECT"]["reason"]
    )
    assert gate(reqs, failing)[0] == 1
    reqs = aggregate(passing, profile="seed", level="may", waivers=live, today=today)
    assert reqs["CORE-OBJECT"]["verdict"] == "unexpectedly-passing"
    assert gate(reqs, passing)[0] == 0
    assert gate(reqs, passing, strict_waivers=True)[0] == 1


def test_profile_decides_which_requirements_apply() -> None:
    seed = aggregate([], profile="seed", level="may")
    openai = aggregate([], profile="openai", level="may")
    assert "STOP-SEQUENCE-INCLUDED" in seed and "STOP-SEQUENCE-EXCLUDED" not in seed
    assert "STOP-SEQUENCE-EXCLUDED" in openai and "STOP-SEQUENCE-INCLUDED" not in openai
    assert openai["RANGE-TEMPERATURE-BOUNDARY"]["level"] == "MUST"
    assert seed["RANGE-TEMPERATURE-BOUNDARY"]["level"] == "MAY"


def _results(records: list[dict[str, Any]]) -> dict[str, Any]:
    return build_results(
        records,
        target={"base_url": "http://x/v1", "model": "m", "profile": "seed"},
        profile="seed",
        level="may",
        started=0.0,
        finished=1.0,
        cost={"requests": 1, "retries": 0, "prompt_tokens": 1, "completion_tokens": 1},
        capabilities={},
    )


def test_a_budget_stop_is_incomplete_not_conformant() -> None:
    records = [
        rec("a", ["CORE-OBJECT"]),
        rec("b", ["CORE-ID-PRESENT"], "skipped", judged=[], skip_reason="not run: budget exhausted: x"),
    ]
    res = _results(records)
    assert res["exit_code"] == 5 and res["verdict"].startswith("INCOMPLETE")


def test_junit_is_well_formed_and_names_requirements_even_with_control_characters() -> None:
    records = [
        rec(
            "test_core.py::test_x",
            ["CORE-OBJECT"],
            "failed",
            violations=[viol("CORE-OBJECT", "got \x1b[31mred\x00 <script>")],
        )
    ]
    root = ET.fromstring(render_junit(_results(records)).encode())
    case = root.find("./testsuite/testcase")
    assert case is not None
    assert [p.get("value") for p in case.iter("property")] == ["CORE-OBJECT"]
    failure = case.find("failure")
    assert failure is not None and "\\x1b[31mred\\x00 <script>" in (failure.get("message") or "")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "waivers.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[waiver]]\nid = 'NOPE'\nreason = 'x'\n", "unknown requirement id 'NOPE'"),
        ("[[waiver]]\nid = 'CORE-OBJECT'\n", "has no reason"),
        ("[[waiver]]\nid = 'CORE-OBJECT'\nreason = 'x'\nexpires = 'soon'\n", "expires must be a date"),
        ("[[waiver]]\nid = 'CORE-OBJECT'\nreason = 'x'\nwho = 'me'\n", "unknown key 'who'"),
        (
            "[[waiver]]\nid = 'CORE-OBJECT'\nreason = 'x'\nintermittent = 'yes'\n",
            "intermittent must be true or false",
        ),
        ("[[waiver]\n", "is not valid TOML"),
        (
            "[[waiver]]\nid = 'CORE-OBJECT'\nreason = 'x'\n[[waiver]]\nid = 'CORE-OBJECT'\nreason = 'y'\n",
            "CORE-OBJECT is waived twice",
        ),
    ],
)
def test_expectations_errors_are_one_line_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        load_expectations(_write(tmp_path, text))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_expectations_parse(tmp_path: Path) -> None:
    w = load_expectations(
        _write(tmp_path, "[[waiver]]\nid = 'CORE-OBJECT'\nreason = ' known '\nexpires = 2027-01-31\n")
    )
    assert w == {"CORE-OBJECT": {"reason": "known", "expires": dt.date(2027, 1, 31), "intermittent": False}}


def test_an_intermittent_waiver_that_passes_is_not_unexpected() -> None:
    waivers = {
        "CORE-OBJECT": {"reason": "changes at second boundaries", "expires": None, "intermittent": True}
    }
    passing = [rec("t", ["CORE-OBJECT"])]
    reqs = aggregate(passing, profile="seed", level="may", waivers=waivers)
    assert reqs["CORE-OBJECT"]["verdict"] == "pass"
    assert "intermittent" in reqs["CORE-OBJECT"]["reason"]
    assert gate(reqs, passing, strict_waivers=True)[0] == 0
    failing = [rec("t", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT")])]
    assert verdicts(failing, waivers=waivers)["CORE-OBJECT"] == "waived"


def test_waived_failures_are_named_in_the_verdict_and_cap_the_level_reached() -> None:
    failing = [rec("t", ["STREAM-ROLE-FIRST"], "failed", violations=[viol("STREAM-ROLE-FIRST")])]
    waivers = {"STREAM-ROLE-FIRST": {"reason": "known", "expires": None}}
    res = build_results(
        failing,
        target={"base_url": "http://x/v1", "model": "m", "profile": "seed"},
        profile="seed",
        level="may",
        started=0.0,
        finished=1.0,
        cost={"requests": 1, "retries": 0, "prompt_tokens": 1, "completion_tokens": 1},
        capabilities={},
        waivers=waivers,
    )
    assert res["exit_code"] == 0
    assert res["verdict"] == "CONFORMANT with 1 waived failure(s)"
    assert res["level_reached"] == "MUST"  # the SHOULD failure is waived, not gone


def test_an_inconclusive_check_is_no_pass_and_the_verdict_says_so() -> None:
    judged_then_gave_up = rec(
        "t",
        ["LOGPROBS-PRESENT"],
        "skipped",
        judged=["LOGPROBS-PRESENT"],
        skip_reason="inconclusive: usage missing",
    )
    reqs = aggregate([judged_then_gave_up], profile="seed", level="may")
    assert reqs["LOGPROBS-PRESENT"]["verdict"] == "not-run"
    code, line = gate(reqs, [judged_then_gave_up])
    assert code == 0 and line == "CONFORMANT; 1 requirement(s) could not be judged"


def test_a_bare_assert_in_a_check_is_the_suites_error_not_the_targets(tmp_path: Path) -> None:
    import textwrap

    import pytest as _pytest

    check = tmp_path / "test_bad_check.py"
    check.write_text(
        textwrap.dedent("""
        from conformance.engine.registry import check

        @check("CORE-OBJECT")
        def test_bad(judge):
            assert 1 == 2, "a bug in the check"
    """),
        encoding="utf-8",
    )
    records: list[dict[str, Any]] = []

    class Grab:
        def pytest_runtest_logreport(self, report: Any) -> None:
            records.extend(v for k, v in report.user_properties if k == "conformance")

    from conformance.reference.server import start_in_thread

    srv = start_in_thread()
    try:
        _pytest.main(
            [
                str(check),
                "-q",
                "-p",
                "no:cacheprovider",
                "--conformance-base-url",
                srv.base_url,
                "--conformance-model",
                srv.model,
                "--conformance-skip-discovery",
            ],
            plugins=[Grab()],
        )
    finally:
        srv.stop()
    assert [r["outcome"] for r in records] == ["error"]
    assert records[0]["violations"] == []
    assert "a bug in the check" in records[0]["error"]


def test_summary_makes_target_text_inert_markdown() -> None:
    records = [
        rec(
            "t",
            ["CORE-OBJECT"],
            "failed",
            violations=[viol("CORE-OBJECT", "![x](https://evil.example/p.png) <script> \x1b[31m")],
        )
    ]
    md = _results(records)
    from conformance.results import render_summary

    text = render_summary(md)
    assert "![x](" not in text and "<script>" not in text and "\x1b" not in text
    assert "\\!\\[x\\]" in text


def test_credentials_in_the_base_url_and_extra_headers_never_reach_evidence() -> None:
    import httpx

    from conformance.client import Client
    from conformance.target import Target

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"echo": request.headers.get("x-api-key")})

    t = Target(
        base_url="http://user:pa55word@127.0.0.1:9/v1",
        model="m",
        extra_headers={"X-Api-Key": "sk-header-canary-51"},
    )
    assert t.display_url == "http://***:***@127.0.0.1:9/v1"
    assert "sk-header-canary-51" not in repr(t)
    with Client(t, transport=httpx.MockTransport(handler)) as c:
        ex = c.chat({"model": "m", "messages": []})
    assert seen and seen[0].headers["x-api-key"] == "sk-header-canary-51"  # sent to the target...
    dumped = repr(ex.to_dict())
    assert "sk-header-canary-51" not in dumped and "pa55word" not in dumped  # ...never recorded


def _results(records: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return build_results(
        records,
        target=kw.pop("target", {"base_url": "http://x/v1", "model": "m", "profile": "seed"}),
        profile="seed",
        level=kw.pop("level", "may"),
        started=0.0,
        finished=1.0,
        cost={"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0},
        capabilities={},
        **kw,
    )


def test_informational_may_findings_have_their_own_section_not_failures() -> None:
    records = [
        rec("may", ["CORE-CONTEXT-SIZE-PUBLISHED"], "failed",
            violations=[viol("CORE-CONTEXT-SIZE-PUBLISHED")]),
        rec("must", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT", "wrong object")]),
    ]
    text = render_summary(_results(records))
    head, _, informational = text.partition(
        "## Informational (MAY findings: reported, they do not fail the gate)"
    )
    assert "CORE-OBJECT" in head.partition("## Failures")[2]
    assert "CORE-CONTEXT-SIZE-PUBLISHED" not in head
    assert "CORE-CONTEXT-SIZE-PUBLISHED" in informational
    # --fail-on may: a MAY finding fails the gate, so it is a failure like the others
    strict = render_summary(_results(records, fail_on="may"))
    assert "## Informational" not in strict
    assert "CORE-CONTEXT-SIZE-PUBLISHED" in strict.partition("## Failures")[2]


@pytest.mark.parametrize(
    "records, sentence",
    [
        (
            [rec("m", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT")])],
            "level reached: **none** (the highest level with no failure, waived ones included, at it or a "
            "stricter level: a MUST requirement failed).",
        ),
        (
            [rec("s", ["CORE-MODEL-MATCHES"], "failed", violations=[viol("CORE-MODEL-MATCHES")])],
            "level reached: **MUST** (the highest level with no failure, waived ones included, at it or a "
            "stricter level: no MUST requirement failed, a SHOULD one did).",
        ),
        (
            [rec("ok", ["CORE-OBJECT"])],
            "level reached: **MAY** (the highest level with no failure, waived ones included, at it or a "
            "stricter level: nothing failed at any level).",
        ),
    ],
)
def test_the_level_reached_is_explained_where_it_is_shown(
    records: list[dict[str, Any]], sentence: str
) -> None:
    assert sentence in render_summary(_results(records))


def test_a_run_up_to_must_does_not_claim_a_stricter_level_unqualified() -> None:
    text = render_summary(_results([rec("ok", ["CORE-OBJECT"])], level="must"))
    assert "nothing failed at any level; this run judged only up to MUST)." in text


def test_summary_names_a_user_profile_by_its_own_name() -> None:
    from conformance.results import profile_label

    target = {
        "base_url": "http://x/v1", "model": "m", "profile": "profiles/acme.toml", "profile_name": "acme"
    }
    res = _results([rec("ok", ["CORE-OBJECT"])], target=target)
    assert profile_label(res) == "acme (profiles/acme.toml, extends seed)"
    assert "profile `acme (profiles/acme.toml, extends seed)`" in render_summary(res)
    assert "profile `seed`" in render_summary(_results([rec("ok", ["CORE-OBJECT"])]))
    # results.json of older runs (no profile_name): the file's stem
    del target["profile_name"]
    assert profile_label(_results([], target=target)) == "acme (profiles/acme.toml, extends seed)"


def test_a_failing_check_prints_one_line_and_a_crash_keeps_its_traceback(tmp_path: Path) -> None:
    """The console entry of a target's fault is one line (requirement, message, path), never the plugin's hook
    wrappers; an internal error of the suite keeps pytest's full traceback."""
    import os
    import subprocess
    import sys
    import textwrap

    from conformance.reference.server import start_in_thread

    (tmp_path / "test_console.py").write_text(
        textwrap.dedent("""
        from conformance.engine.registry import check

        @check("CORE-OBJECT", "CORE-ID-PRESENT")
        def test_two_violations(judge):
            judge.check(False, "CORE-OBJECT", 'object is not "chat.completion"', path="$.object",
                        expected="chat.completion", received="list")
            judge.check(False, "CORE-ID-PRESENT", "no id", path="$.id")

        @check("CORE-MODEL-PRESENT")
        def test_stopped_by_require(judge):
            judge.require(False, "CORE-MODEL-PRESENT", "no model\\nin the body \\x1b[31m", path="$.model")
            raise AssertionError("never reached")

        @check("CORE-CREATED-SECONDS")
        def test_suite_crash(judge):
            usage = {}
            usage["prompt_tokens"] += 1
    """),
        encoding="utf-8",
    )
    root = Path(__file__).resolve().parent.parent
    with start_in_thread() as srv:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "test_console.py", "-q", "-p", "no:cacheprovider",
             "-p", "no:randomly", "--conformance-base-url", srv.base_url, "--conformance-model", srv.model,
             "--conformance-skip-discovery", "--conformance-report-dir", str(tmp_path / "r")],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = done.stdout

    def entry(name: str) -> list[str]:
        body = out.split(f" {name} _", 1)[1].split("\n_", 1)[0].split("\n=", 1)[0]
        return [ln for ln in body.splitlines()[1:] if ln.strip()]

    assert entry("test_two_violations") == [
        'CORE-OBJECT: object is not "chat.completion" (at $.object); 1 more violation(s): CORE-ID-PRESENT; '
        "evidence in the reports"
    ], out
    assert entry("test_stopped_by_require") == [
        "CORE-MODEL-PRESENT: no model in the body \\x1b[31m (at $.model); evidence in the reports"
    ], out
    crash = "\n".join(entry("test_suite_crash"))
    assert "KeyError" in crash and 'usage["prompt_tokens"] += 1' in crash  # the suite's bug, in full
    assert "pytest_runtest_call" not in out and "plugin.py" not in out.split(" test_suite_crash _")[0]


@pytest.mark.parametrize("status, error, hint", [
    (429, None, "retry later, with fewer workers (-n) or a lower --rate-limit"),
    (503, None, "retry later, with fewer workers (-n) or a lower --rate-limit"),
    (None, "read timeout (idle 20 s)", "the target did not answer in time: retry later, or with a longer"),
    (None, "transport error (ConnectError): refused", "the target did not answer in time"),
])
def test_an_incomplete_run_names_the_fix_from_what_the_exchanges_show(
    status: int | None, error: str | None, hint: str
) -> None:
    """Too many checks unanswered: the hint is told by the unanswered exchanges (a 429/503 that survived the
    retries, or no answer at all), whatever the skip message says."""
    records = [rec(f"t::ok{i}", ["CORE-OBJECT"]) for i in range(5)]
    lost = rec("t::lost", ["CORE-ID-PRESENT"], "skipped", judged=[], skip_reason="inconclusive: anything")
    lost["skip_kind"] = "unanswered"
    lost["exchanges"] = [{"status": status, "transport_error": error}]
    res = _results([*records, lost])
    assert res["exit_code"] == 5
    assert hint in res["verdict"], res["verdict"]


@pytest.mark.parametrize("kind, stale", [
    ("unanswered", False), ("budget", False), ("interrupted", False), ("not-recorded", False),
    ("inconclusive", True), ("unsupported", True),
])
def test_a_waiver_is_never_called_stale_on_what_the_run_could_not_judge(kind: str, stale: bool) -> None:
    """vLLM fell over mid-run: the generated checks that show a waived ERROR-WRONG-TYPE failure were left
    unanswered, its three hand-written cases passed, and --strict-waivers failed the gate on
    "unexpectedly-passing". A pass beside checks the run's frame kept from judging (unanswered, budget,
    stopped, not recorded) is a plain pass that says why; one beside the target's own inconclusive or
    unsupported checks still says the waiver is stale."""
    records = [
        rec("t::case", ["ERROR-WRONG-TYPE"]),
        rec("t::generated", ["ERROR-WRONG-TYPE"], "skipped", judged=[], skip_reason=f"{kind}: x"),
    ]
    records[1]["skip_kind"] = kind
    live = {"ERROR-WRONG-TYPE": {"reason": "coerces numeric strings"}}
    reqs = aggregate(records, profile="seed", level="may", waivers=live)
    r = reqs["ERROR-WRONG-TYPE"]
    if stale:
        assert r["verdict"] == "unexpectedly-passing"
        assert gate(reqs, records, strict_waivers=True)[0] == 1
    else:
        assert r["verdict"] == "pass"
        said = f"passed what was judged; 1 of its checks did not judge it (t::generated: {kind})"
        assert r["reason"].startswith(said)
        assert gate(reqs, records, strict_waivers=True)[0] == 0


def test_levels_kept_say_waived_when_only_waived_failures_bound_them() -> None:
    """A pinned target's run printed "levels kept: none (a MUST requirement failed)" above "CONFORMANT — no
    MUST failure": the failure was waived, and the summary now says so."""
    from conformance.results import levels_kept, only_waived_below

    waived = [rec("t::a", ["CORE-OBJECT"], "failed", violations=[viol("CORE-OBJECT")]),
              rec("t::b", ["CORE-ID-PRESENT"])]
    res = build_results(waived, target={"base_url": "http://x/v1", "model": "m", "profile": "seed"},
                        profile="seed", level="may", started=0.0, finished=1.0,
                        cost={"requests": 1, "retries": 0, "prompt_tokens": 1, "completion_tokens": 1},
                        capabilities={}, waivers={"CORE-OBJECT": {"reason": "known"}})
    assert res["exit_code"] == 0 and res["level_reached"] == "none"
    assert only_waived_below(res)
    assert levels_kept("none", waived=True) == "levels kept: none (a MUST requirement failed, waived)"
    failing = build_results(waived, target={"base_url": "http://x/v1", "model": "m", "profile": "seed"},
                            profile="seed", level="may", started=0.0, finished=1.0,
                            cost={"requests": 1, "retries": 0, "prompt_tokens": 1, "completion_tokens": 1},
                            capabilities={})
    assert not only_waived_below(failing)
    assert levels_kept("none") == "levels kept: none (a MUST requirement failed)"


def test_a_run_that_judged_nothing_it_set_out_to_is_incomplete_never_conformant() -> None:
    """--only one requirement whose check ended inconclusive: 0 judged. It said CONFORMANT, exit 0, "levels
    kept: MUST, SHOULD and MAY" (found while proving SAMPLING-TEMPERATURE-SAMPLES's fault). Now INCOMPLETE,
    exit 5, no level claimed. Deselected and unsupported requirements alone are not such a run."""
    undecided = rec("t", ["SAMPLING-TEMPERATURE-SAMPLES"], "skipped", judged=[],
                    skip_reason="inconclusive: the model is confident there")
    res = _results([undecided])
    assert res["exit_code"] == 5 and res["level_reached"] == "none"
    assert res["verdict"].startswith("INCOMPLETE: no requirement it set out to judge could be judged")
    assert "0 of" in res["verdict"] and "CONFORMANT" not in res["verdict"].replace("NOT CONFORMANT", "")
    judged = _results([undecided, rec("u", ["CORE-OBJECT"])])
    assert judged["exit_code"] == 0 and judged["verdict"].startswith("CONFORMANT")
    unsupported = rec("v", ["TOOLS-CALL-SHAPE"], "skipped", judged=[], skip_reason="unsupported: tools: none")
    assert _results([unsupported])["exit_code"] == 0
