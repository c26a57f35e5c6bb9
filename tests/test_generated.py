"""The property-based checks (conformance/checks/test_generated.py): sound generators, bounded cost, zero
findings on the clean reference server and the expected finding on each fault they are meant to catch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from conformance.catalog import catalog
from conformance.checks._generated import (
    MAX_N,
    MAX_TOKENS,
    REMOVED,
    UNANSWERED_IN_A_ROW,
    apply_mutation,
    classify,
    draw_requests,
    field_document,
    inside_ranges,
    invalid_requests,
    minimal_request,
    mutation_fields,
    mutations,
    run_property,
    target_document,
    valid_requests,
)
from conformance.cli import main
from conformance.evidence import Exchange
from conformance.profiles import load_profile
from conformance.schemas import schema_errors
from conformance.violations import Judge, Unanswered

MODEL = "reference-tiny"
ALL_CAPS = {c: {"supported": True} for c in ("tools", "json-object", "json-schema", "reasoning", "thinking")}
NO_CAPS = {c: {"supported": False} for c in ALL_CAPS}
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


# ---- generators ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile_name", ["seed", "openai"])
def test_valid_requests_validate_and_keep_the_unwritten_rules(profile_name: str) -> None:
    profile = load_profile(profile_name)
    ranges = inside_ranges(profile.base)

    @FAST
    @given(valid_requests(MODEL, profile, ALL_CAPS))
    def check(req: dict[str, Any]) -> None:
        assert schema_errors("CreateChatCompletionRequest", req) == []
        assert req["model"] == MODEL
        assert 1 <= req["max_tokens"] <= MAX_TOKENS
        assert 1 <= req.get("n", 1) <= MAX_N
        assert "top_logprobs" not in req or req.get("logprobs") is True
        assert "stream_options" not in req or req.get("stream") is True
        assert set(req.get("logit_bias", {})) <= {str(profile.any_token_id)}
        if "tool_choice" in req:
            assert "tools" in req
            choice = req["tool_choice"]
            if isinstance(choice, dict):
                assert choice["function"]["name"] in [t["function"]["name"] for t in req["tools"]]
        for name, b in ranges.items():
            v = req.get(name)
            if name == "logit_bias" or not isinstance(v, (int, float)):
                continue
            assert b.lo is None or v > b.lo or (b.lo_in and v == b.lo), (name, v)
            assert b.hi is None or v < b.hi or (b.hi_in and v == b.hi), (name, v)

    check()


def test_optional_capability_fields_only_when_supported() -> None:
    @FAST
    @given(valid_requests(MODEL, load_profile("seed"), NO_CAPS))
    def check(req: dict[str, Any]) -> None:
        for name in ("tools", "tool_choice", "separate_reasoning", "enable_thinking"):
            assert name not in req
        assert req.get("response_format", {"type": "text"}) == {"type": "text"}

    check()


def test_exclusive_seed_bounds_are_generated_only_where_the_profile_makes_them_must() -> None:
    seed, openai = inside_ranges("seed"), inside_ranges("openai")
    t = seed["temperature"]
    assert (t.lo, t.hi, t.lo_in, t.hi_in) == (0, 2, False, False)  # "0 < x < 2": informational bounds
    assert (openai["temperature"].lo_in, openai["temperature"].hi_in) == (True, True)
    assert seed["n"].lo_in and not seed["n"].hi_in  # n = 1 is the default (DECISIONS #n-range)
    assert not seed["top_p"].lo_in and seed["top_p"].hi_in  # "0 < x <= 1"
    assert seed["min_p"].lo_in and seed["min_p"].hi_in  # "0 <= x <= 1"
    assert seed["top_logprobs"].lo_in and seed["top_logprobs"].hi_in
    assert not openai["top_k"].lo_in  # not an OpenAI parameter: its bound stays informational


@pytest.mark.parametrize("field_name", mutation_fields())
def test_every_mutation_breaks_the_schema(field_name: str) -> None:
    muts = mutations(MODEL)[field_name]
    for m in muts:
        assert m.requirement in catalog(), m
        bad = apply_mutation(minimal_request(MODEL), m, m.example)
        assert schema_errors("CreateChatCompletionRequest", bad), (m.what, bad)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(invalid_requests(valid_requests(MODEL, load_profile("seed"), ALL_CAPS), field_name, muts))
    def check(pair: Any) -> None:
        req, m = pair
        assert m.field == field_name and m in muts
        assert schema_errors("CreateChatCompletionRequest", req), (m.what, req)
        assert classify(field_name, req.get(field_name, REMOVED), muts) == m

    check()


@pytest.mark.parametrize("field_name", mutation_fields())
def test_each_fixed_example_is_classified_as_its_own_kind(field_name: str) -> None:
    muts = mutations(MODEL)[field_name]
    for m in muts:
        assert classify(field_name, m.example, muts) == m, m.what
    if field_name not in ("model", "messages"):  # null for an optional field reads as absent: no kind
        assert classify(field_name, None, muts) is None


def test_requests_come_from_schemathesis_and_import_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, conformance.checks._generated as g, conformance.checks.test_generated;"
        "assert 'schemathesis' not in sys.modules, 'imported at module import';"
        "from conformance.profiles import load_profile;"
        "g.valid_requests('m', load_profile('seed'), {}).example();"
        "assert 'schemathesis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    doc = target_document(MODEL, "seed", 100, ALL_CAPS)
    body = doc["paths"]["/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["model"]["const"] == MODEL
    assert body["properties"]["max_tokens"]["maximum"] == MAX_TOKENS
    assert body["properties"]["n"]["maximum"] == MAX_N
    assert "exclusiveMaximum" in body["properties"]["temperature"]  # "0 < x < 2" under the seed profile
    one = field_document("temperature")["paths"]["/chat/completions"]["post"]
    assert set(one["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"temperature"}
    assert one["security"] == []


# ---- the runner: bounded requests, minimal failing request as evidence -----------------------------------


def _fake_send(fail: Any) -> tuple[Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def send(req: dict[str, Any], label: str) -> Exchange:
        sent.append(req)
        ok = not fail(req)
        return Exchange(
            label=label,
            method="POST",
            url="http://x/chat/completions",
            request_headers={},
            request_body=json.dumps(req),
            status=200 if ok else 400,
            body_text="{}",
        )

    return send, sent


def _evaluate(scratch: Judge, ex: Exchange, req: dict[str, Any], what: str) -> None:
    scratch.check(ex.status == 200, "GEN-VALID-ACCEPTED", "refused", received=ex.status, exchange=ex)


def _run(fail: Any, examples: int) -> tuple[Judge, list[dict[str, Any]], Any]:
    send, sent = _fake_send(fail)
    judge = Judge(requirements=("GEN-VALID-ACCEPTED",))
    real_send = send

    def recording(req: dict[str, Any], label: str) -> Exchange:
        ex = real_send(req, label)
        judge.exchanges.append(ex)
        return ex

    strategy = valid_requests(MODEL, load_profile("seed"), ALL_CAPS).map(lambda r: (r, "valid request"))
    drawn = draw_requests(strategy, count=examples, seed=7, valid=True,
                          explicit=[(minimal_request(MODEL), "simplest")])
    stats = run_property(judge, recording, drawn, _evaluate, seed=7, label="t")
    return judge, sent, stats


def test_runner_passing_sends_at_most_explicit_plus_examples() -> None:
    judge, sent, stats = _run(lambda req: False, 10)
    assert not judge.violations
    assert 1 <= len(sent) <= 1 + 10
    assert "GEN-VALID-ACCEPTED" in judge.judged
    assert len({json.dumps(r, sort_keys=True) for r in sent}) == len(sent)  # never the same request twice


def test_runner_shows_the_smallest_failing_request() -> None:
    judge, sent, stats = _run(lambda req: "temperature" in req, 25)
    assert len(sent) <= stats.cap <= 1 + 25
    assert len(judge.violations) == 1  # one requirement broken: one finding, however many requests showed it
    v = judge.violations[0]
    shown = json.loads(judge.exchanges[v.exchange].request_body or "")
    failing = [r for r in sent if "temperature" in r]
    assert len(failing) > 1
    size = [len(json.dumps(r, sort_keys=True, ensure_ascii=False)) for r in failing]
    assert len(json.dumps(shown, sort_keys=True, ensure_ascii=False)) == min(size)
    assert json.dumps(shown, sort_keys=True, ensure_ascii=False) in v.message
    assert f"the smallest of {len(failing)} of the {len(sent)} requests sent that showed it" in v.message
    assert "hypothesis seed 7" in v.message


def test_runner_cap_holds_when_everything_fails() -> None:
    judge, sent, stats = _run(lambda req: True, 4)
    assert stats.cap <= 1 + 4
    # no batch after one that showed a violation: the first batch (UNANSWERED_IN_A_ROW requests) only
    assert len(sent) == stats.sent == UNANSWERED_IN_A_ROW < stats.cap
    assert len(judge.violations) == 1
    assert "the smallest of 3 of the 3 requests sent that showed it" in judge.violations[0].message


def test_runner_each_requirement_broken_gets_its_smallest_request() -> None:
    send, sent = _fake_send(lambda req: False)

    def evaluate(scratch: Judge, ex: Exchange, req: dict[str, Any], what: str) -> None:
        second = " #2:" in ex.label
        scratch.check(second, "CORE-SCHEMA-VALID", "t", exchange=ex)  # broken by the 1st and 3rd
        scratch.check(not second, "GEN-VALID-ACCEPTED", "s", exchange=ex)  # broken by the 2nd

    judge = Judge(requirements=("GEN-VALID-ACCEPTED", "CORE-SCHEMA-VALID"))
    strategy = valid_requests(MODEL, load_profile("seed"), ALL_CAPS).map(lambda r: (r, "valid request"))
    drawn = draw_requests(strategy, count=25, seed=7, valid=True)
    run_property(judge, send, drawn, evaluate, seed=7, label="t")
    assert sorted(v.requirement for v in judge.violations) == ["CORE-SCHEMA-VALID", "GEN-VALID-ACCEPTED"]
    assert len(sent) == 3  # no batch after the first, which showed violations


# ---- reproducible: the requests are drawn before any is sent -----------------------------------------------


def test_the_requests_sent_do_not_depend_on_the_answers() -> None:
    """Runs against targets that answer differently (one accepts all, one refuses some, one refuses all)
    send the same requests in the same order, as far as they go: hypothesis never sees an answer; a target
    that failed a batch is sent no further batch, so its requests are a prefix of the others'."""
    runs = [_run(fail, 10)[1] for fail in (lambda r: False, lambda r: "stop" in r, lambda r: True)]
    assert len(runs[0]) > 5
    assert runs[1] == runs[0][: len(runs[1])] and runs[2] == runs[0][: len(runs[2])]
    assert len(runs[2]) == UNANSWERED_IN_A_ROW  # the first batch showed violations: no second


def test_the_same_seed_draws_the_same_requests_whatever_modules_are_loaded(tmp_path: Path) -> None:
    """hypothesis mixes constants of the loaded local modules into its draws (and caches them under its
    storage directory); the generated phase does not let it: a second run in the same process, or a test
    harness that imported more modules, draws the same requests."""
    from hypothesis.configuration import set_hypothesis_home_dir

    strategy = valid_requests(MODEL, load_profile("seed"), ALL_CAPS).map(lambda r: (r, "valid request"))
    set_hypothesis_home_dir(tmp_path / "hypothesis-home")
    try:
        first = draw_requests(strategy, count=15, seed=3, valid=True)
        import conformance.reference.app  # noqa: F401  (more local modules, more constants)
        import conformance.reports.html  # noqa: F401
        import targets.common  # noqa: F401

        second = draw_requests(strategy, count=15, seed=3, valid=True)
    finally:
        set_hypothesis_home_dir(None)
    assert first == second and len(first) >= 10
    assert draw_requests(strategy, count=15, seed=4, valid=True) != first
    assert not (tmp_path / "hypothesis-home" / "constants").exists()


def test_explicit_examples_come_first_and_are_not_repeated() -> None:
    strategy = valid_requests(MODEL, load_profile("seed"), ALL_CAPS).map(lambda r: (r, "valid request"))
    simplest = minimal_request(MODEL)
    drawn = draw_requests(strategy, count=5, seed=1, valid=True,
                          explicit=[(simplest, "simplest"), (simplest, "again")])
    assert drawn[0].request == simplest and drawn[0].explicit and drawn[0].what == "simplest"
    keys = [json.dumps(d.request, sort_keys=True) for d in drawn]
    assert len(set(keys)) == len(keys) and not any(d.explicit for d in drawn[1:])


def test_runner_never_judges_an_unanswered_request() -> None:
    """A 429/503 after the client's retries (the checks' client raises ``Unanswered``) is no answer: that
    example is not judged and another takes its place; a property nobody answered is inconclusive."""
    send, sent = _fake_send(lambda req: "temperature" in req)  # a request with temperature would "fail"

    def throttled(req: dict[str, Any], label: str) -> Exchange:
        if "temperature" in req:  # ... but every one of them is rate-limited
            sent.append(req)
            raise Unanswered(429, 2, "1")
        return send(req, label)

    judge = Judge(requirements=("GEN-VALID-ACCEPTED",))
    strategy = valid_requests(MODEL, load_profile("seed"), ALL_CAPS).map(lambda r: (r, "valid request"))
    drawn = draw_requests(strategy, count=10, seed=7, valid=True,
                          explicit=[(minimal_request(MODEL), "simplest")])
    stats = run_property(judge, throttled, drawn, _evaluate, seed=7, label="t")
    assert not judge.violations and "GEN-VALID-ACCEPTED" in judge.judged
    assert stats.unanswered >= 1 and stats.unanswered == sum("temperature" in r for r in sent)

    calls: list[str] = []

    def nobody(req: dict[str, Any], label: str) -> Exchange:
        calls.append(label)
        raise Unanswered(503, 2, None)

    judge = Judge(requirements=("GEN-VALID-ACCEPTED",))
    with pytest.raises(Unanswered, match=r"^overloaded after 2 retries \(HTTP 503, no Retry-After\)"):
        run_property(judge, nobody, drawn, _evaluate, seed=7, label="t")
    assert not judge.judged
    assert len(calls) == UNANSWERED_IN_A_ROW  # then it stops: more requests would only feed the limiter


# ---- against the reference server -------------------------------------------------------------------------


def _conformance_run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "reports"
    code = main(
        [
            "run",
            "--report-dir",
            str(report),
            "--examples",
            "5",
            "--hypothesis-seed",
            "3",
            "--only",
            "GEN-VALID-ACCEPTED",
            "--only",
            "GEN-INVALID-REJECTED",
            *args,
        ]
    )
    return code, json.loads((report / "results.json").read_text(encoding="utf-8"))


def test_clean_reference_server_has_no_generated_findings(tmp_path: Path) -> None:
    code, results = _conformance_run(tmp_path)
    checks = [c for c in results["checks"] if "test_generated.py" in c["nodeid"]]
    assert len(checks) == 1 + len(mutation_fields())
    assert {c["outcome"] for c in checks} == {"passed"}, [c["violations"] for c in checks]
    for rid in (
        "GEN-VALID-ACCEPTED",
        "GEN-INVALID-REJECTED",
        "CORE-SCHEMA-VALID",
        "STREAM-CHUNK-SCHEMA",
        "ERROR-NO-5XX",
        "RANGE-TEMPERATURE-REJECT",
        "ERROR-WRONG-TYPE",
    ):
        assert results["requirements"][rid]["verdict"] == "pass", rid
    assert code == 0
    labels = [e["label"] for c in checks for e in c["exchanges"]]
    assert labels and all("hypothesis seed 3" in lb for lb in labels)
    # cost bound: valid phase <= 4 + N (explicit examples), each field <= its mutations + ceil(N / 10)
    bound = 4 + 5 + sum(len(m) + 1 for m in mutations(MODEL).values())
    assert sum(len(c["exchanges"]) for c in checks) <= bound


@pytest.mark.parametrize(
    "fault, requirement, field_check",
    [
        ("temperature-out-of-range-accepted", "RANGE-TEMPERATURE-REJECT", "[temperature]"),
        ("bad-input-500", "ERROR-NO-5XX", "test_generated_invalid_request_rejected"),
        ("chunk-schema-invalid", "STREAM-CHUNK-SCHEMA", "test_generated_valid_requests_accepted"),
        ("usage-float", "CORE-SCHEMA-VALID", "test_generated_valid_requests_accepted"),
        ("top-k-rejected-inside", "GEN-VALID-ACCEPTED", "test_generated_valid_requests_accepted"),
        ("five-stops-accepted", "RANGE-STOP-REJECT", "[stop]"),
        ("unknown-role-accepted", "ERROR-INVALID-ROLE", "[messages]"),
    ],
)
def test_fault_gives_a_generated_finding(
    tmp_path: Path, fault: str, requirement: str, field_check: str
) -> None:
    code, results = _conformance_run(tmp_path, "--fault", fault)
    # the default gate fails on MUST failures only; a SHOULD failure (ERROR-INVALID-ROLE) is a warning
    assert code == (1 if catalog()[requirement].level == "MUST" else 0)
    assert results["requirements"][requirement]["verdict"] == "fail"
    failed = [c for c in results["checks"] if c["outcome"] == "failed"]
    # the generated checks find it; the run-wide invariants may see the same answers ("run-wide::ID")
    assert failed and all(
        "test_generated.py" in c["nodeid"] or c["nodeid"].startswith("run-wide::") for c in failed
    )
    hits = [
        (c, v)
        for c in failed
        if field_check in c["nodeid"]
        for v in c["violations"]
        if v["requirement"] == requirement
    ]
    assert hits, [(c["nodeid"], c["violations"]) for c in failed]
    check, v = hits[0]
    evidence = check["exchanges"][v["exchange"]]
    assert evidence["request_body"] is not None
    shown = json.dumps(json.loads(evidence["request_body"]), sort_keys=True, ensure_ascii=False)
    assert shown in v["message"], "the finding shows the request its evidence exchange sent"
    assert "hypothesis seed 3" in v["message"]
