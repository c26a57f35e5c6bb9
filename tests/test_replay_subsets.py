"""Replay never invents a failure (issue 21, point 7): a recording made with one selection and replayed with
another gives every requirement the recorded run judged the same verdict, fails nothing the recorded run did
not fail, and says "not recorded" for what the recording lacks: auth and discovery included. A recording of a
faulty target keeps its real failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import REPLAY_KEY_ENV, main

JUDGED = ("pass", "fail", "waived", "unexpectedly-passing", "informational", "unsupported")
FAILED = ("fail", "informational", "error")


def _results(report: Path) -> dict[str, Any]:
    return json.loads((report / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _no_replay_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REPLAY_KEY_ENV, "")  # remembered, and so restored after the test: replay sets it
    monkeypatch.delenv(REPLAY_KEY_ENV)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Runs of the embedded reference server, each recorded: name -> (recording, its results)."""
    base = tmp_path_factory.mktemp("subsets")
    runs = {
        "core": ["--only", "core"],
        "all": [],
        "auth": ["--only", "auth"],
        "must": ["--only", "core", "--only", "auth", "--level", "must"],
        "faulty": ["--only", "auth", "--fault", "auth-not-checked"],
        "faulty-core": ["--only", "core", "--fault", "auth-not-checked"],
        "tools": ["--only", "tools", "--require", "tools"],
    }
    out = {}
    for name, args in runs.items():
        har, report = base / f"{name}.har", base / f"{name}-live"
        code = main(["run", *args, "--record", str(har), "--report-dir", str(report)])
        assert code == (1 if name == "faulty" else 0), name
        out[name] = (har, _results(report))
    return out


def _replay(har: Path, tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "replay"
    code = main(["replay", str(har), *args, "--report-dir", str(report)])
    results = _results(report)
    assert code == results["exit_code"]
    return results


def _faithful(recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """Requirements whose replayed verdict the recording does not back, with the verdicts; [] when none.
    A requirement the replay selected keeps the recorded verdict; one the recorded run did not judge is never
    a failure in the replay (a pass only on evidence the recording holds: an exchange the recorded checks
    shared; else not judged: "not recorded", asserted by each test)."""
    wrong = []
    for rid, rec in recorded["requirements"].items():
        rep = replayed["requirements"][rid]
        said = f"{rid}: {rec['verdict']} recorded, {rep['verdict']} replayed ({rep['reason'][:120]})"
        if rep["verdict"] in FAILED and rec["verdict"] not in FAILED:
            wrong.append(said)
        elif rec["verdict"] in JUDGED and rep["checks"] and rep["verdict"] != rec["verdict"]:
            wrong.append(said)
        elif rec["verdict"] not in JUDGED and rep["verdict"] not in ("pass", "not-run"):
            wrong.append(said)
    return wrong


def _not_recorded(replayed: dict[str, Any]) -> set[str]:
    return {rid for rid, r in replayed["requirements"].items()
            if r["verdict"] == "not-run" and r["reason"].startswith("not recorded: ")}


def test_a_core_recording_replayed_whole_fails_no_auth_requirement(recordings: Any, tmp_path: Path) -> None:
    har, recorded = recordings["core"]
    replayed = _replay(har, tmp_path)
    assert _faithful(recorded, replayed) == []
    assert replayed["exit_code"] == 0, replayed["verdict"]
    # the auth checks' requests are not in the recording: "not recorded", never "accepted without a key"
    assert {"AUTH-MISSING-KEY", "AUTH-WRONG-KEY"} <= _not_recorded(replayed)
    auth = [c for c in replayed["checks"] if c["nodeid"].startswith("test_auth.py::")]
    assert auth and all(c["skip_reason"].startswith("not recorded: ") for c in auth), auth
    assert any("without a key" in c["skip_reason"] for c in auth)


def test_a_whole_recording_replayed_with_only_auth_keeps_its_verdicts(recordings: Any,
                                                                       tmp_path: Path) -> None:
    har, recorded = recordings["all"]
    # the entries in the order a run under pytest-xdist may write them (its records come as workers finish):
    # here the other checks' requests with the auth checks' body and the key come before the auth checks'
    data = json.loads(har.read_text(encoding="utf-8"))
    data["log"]["entries"].reverse()
    for name, entries in (("as-written", None), ("reordered", data["log"]["entries"])):
        path = har
        if entries is not None:
            path = tmp_path / "reordered.har"
            path.write_text(json.dumps(data), encoding="utf-8")
        replayed = _replay(path, tmp_path / name, "--only", "auth")
        assert _faithful(recorded, replayed) == [], name
        assert replayed["exit_code"] == 0, (name, replayed["verdict"])
        for rid in ("AUTH-MISSING-KEY", "AUTH-WRONG-KEY", "AUTH-NOTHING-GENERATED"):
            assert recorded["requirements"][rid]["verdict"] == "pass"
            assert replayed["requirements"][rid]["verdict"] == "pass", (name, replayed["requirements"][rid])


def test_an_auth_recording_replayed_with_only_core_is_not_recorded(recordings: Any, tmp_path: Path) -> None:
    har, recorded = recordings["auth"]
    replayed = _replay(har, tmp_path, "--only", "core")
    assert _faithful(recorded, replayed) == []
    assert replayed["exit_code"] == 0, replayed["verdict"]
    core = {rid for rid, r in replayed["requirements"].items() if r["capability"] == "core" and r["checks"]}
    assert core and core <= _not_recorded(replayed) | {
        rid for rid, r in replayed["requirements"].items() if r["verdict"] == "pass"}
    assert _not_recorded(replayed) & core


def test_a_must_recording_replayed_at_may_keeps_its_verdicts(recordings: Any, tmp_path: Path) -> None:
    har, recorded = recordings["must"]
    replayed = _replay(har, tmp_path, "--only", "core", "--only", "auth", "--level", "may")
    assert _faithful(recorded, replayed) == []
    assert replayed["exit_code"] == 0, replayed["verdict"]
    above = {rid for rid, r in recorded["requirements"].items()
             if r["reason"].startswith("above the run's level")}
    assert above & _not_recorded(replayed), "the SHOULD/MAY checks the MUST run never sent: not recorded"


def test_a_faulty_targets_recording_keeps_its_real_auth_failure(recordings: Any, tmp_path: Path) -> None:
    har, recorded = recordings["faulty"]
    assert recorded["requirements"]["AUTH-MISSING-KEY"]["verdict"] == "fail"
    replayed = _replay(har, tmp_path, "--only", "auth")
    assert replayed["exit_code"] == 1
    assert replayed["requirements"]["AUTH-MISSING-KEY"]["verdict"] == "fail"
    assert _faithful(recorded, replayed) == []
    # the same target recorded without its auth checks: nothing to judge them on, so no failure either
    har, recorded = recordings["faulty-core"]
    replayed = _replay(har, tmp_path / "core", "--only", "auth")
    assert replayed["exit_code"] == 0, replayed["verdict"]
    assert "AUTH-MISSING-KEY" in _not_recorded(replayed)


def test_a_discovery_probe_the_recording_lacks_makes_its_capability_unknown(recordings: Any,
                                                                            tmp_path: Path) -> None:
    har, recorded = recordings["tools"]
    assert recorded["capabilities"]["tools"]["source"] == "required"  # no tools probe was sent
    # replayed as recorded (its --require comes from the recording): the same verdicts
    same = _replay(har, tmp_path / "same")
    assert _faithful(recorded, same) == []
    assert {r["verdict"] for r in same["requirements"].values() if r["capability"] == "tools"} & {"pass"}
    # replayed with another --require: the tools probe is not in the recording
    replayed = _replay(har, tmp_path / "other", "--require", "json-object")
    assert replayed["exit_code"] == 0, replayed["verdict"]
    tools = replayed["capabilities"]["tools"]
    assert tools["source"] == "not recorded" and tools["reason"].startswith("not recorded: "), tools
    verdicts = {r["verdict"] for r in replayed["requirements"].values() if r["capability"] == "tools"}
    assert verdicts == {"not-run"}, verdicts  # neither unsupported nor judged
    tool_ids = {rid for rid, r in replayed["requirements"].items() if r["capability"] == "tools"}
    assert tool_ids <= _not_recorded(replayed)


def test_the_replay_transport_answers_by_credential_and_by_asking_check() -> None:
    import httpx

    from conformance.evidence import Exchange
    from conformance.har import NotRecorded, ReplayTransport, build_har, recorded_exchanges

    url = "http://recorded.invalid/v1/chat/completions"

    def ex(label: str, status: int, credentials: dict[str, str], auth: bool = True) -> dict[str, Any]:
        headers = {"Authorization": "Bearer ***"} if auth else {}
        e = Exchange(label=label, method="POST", url=url, request_headers=headers, request_body='{"a": 1}',
                     status=status, body_text=f'{{"who": "{label}"}}')
        d = e.to_dict()
        d["credentials"] = credentials
        return d

    keyed = ex("keyed", 200, {"authorization": "$CONFORMANCE_API_KEY"})
    keyless = ex("keyless", 401, {}, auth=False)
    wrong = ex("wrong", 401, {"authorization": "sk-wrong"})
    records = [{"nodeid": "c::other", "exchanges": [keyed]},
               {"nodeid": "c::auth", "exchanges": [keyless, wrong]}]
    har = build_har(recorded_exchanges(records), run={"base_url": "b", "model": "m", "auth": True})
    t = ReplayTransport(har, api_key="placeholder")

    def send(key: str | None) -> str:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(transport=t) as c:
            return c.post(url, content=b'{"a": 1}', headers=headers).json()["who"]

    t.asking = "c::auth"
    assert send("sk-wrong") == "wrong"
    with pytest.raises(NotRecorded, match="^not recorded: POST /v1/chat/completions with this body"):
        send("placeholder")  # the keyed answer is another check's
    assert send(None) == "keyless"
    t.asking = "c::other"
    with pytest.raises(NotRecorded, match="without a key"):
        send(None)
    assert send("placeholder") == "keyed"
