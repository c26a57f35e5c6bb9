"""The kill matrix: the suite passes on the clean reference server and catches every fault mode.

Each fault breaks exactly one requirement; the suite, restricted to that requirement, must fail on it.
This is the suite's proof of detection power.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.catalog import catalog
from conformance.cli import main
from conformance.reference.faults import FAULTS
from conformance.reference.variants import VARIANTS


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "reports"
    code = main(["run", "--report-dir", str(report), *args])
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    return code, results


def test_clean_reference_server_is_conformant(tmp_path: Path) -> None:
    code, results = _run(tmp_path)
    failing = {
        k: v["reason"]
        for k, v in results["requirements"].items()
        if v["verdict"] in ("fail", "error", "informational")
    }
    assert failing == {}
    assert code == 0, results["verdict"]
    not_run = {k: v["reason"] for k, v in results["requirements"].items() if v["verdict"] != "pass"}
    assert not_run == {}, "every requirement must be judged (pass) on the reference server"


@pytest.mark.parametrize("fault", sorted(FAULTS), ids=str)
def test_fault_is_detected(fault: str, tmp_path: Path) -> None:
    req = FAULTS[fault].requirement
    assert req in catalog(), f"fault {fault} names unknown requirement {req}"
    profile = "seed" if catalog()[req].applies_to("seed") else "openai"
    # SHOULD failures are warnings under the default gate; the matrix widens it to see every failure exit 1.
    # A run-wide fault shows only on other checks' exchanges: it is proven by a whole run.
    scope = () if FAULTS[fault].run_wide else ("--only", req)
    code, results = _run(tmp_path, "--fault", fault, *scope, "--profile", profile, "--fail-on", "should")
    verdict = results["requirements"][req]["verdict"]
    expected = "informational" if catalog()[req].level == "MAY" else "fail"
    assert verdict == expected, f"fault {fault} not detected: {req} is {verdict}"
    if expected == "fail":
        assert code == 1


# ---- faults with a legitimate variant switched on ---------------------------------------------------------
# A variant's tolerance must not blind a check: every fault is also caught with a legitimate variant on.
# Each fault is paired with a variant that bears on its requirement's capability where one does (rotating
# through them), else with the next composable variant in turn; every legitimate variant gets faults. A pair
# does not compose when the variant names the fault in its `conflicts` (both change the same decision) or is
# legitimate under another profile.
BEARS_ON: dict[str, tuple[str, ...]] = {
    "null-optional-fields": ("core", "streaming", "tools", "logprobs"),
    "extra-fields": ("core", "streaming", "usage"),
    "sse-comments-crlf": ("streaming",),
    "sse-id-retry": ("streaming",),
    "content-type-charset": ("core", "streaming", "errors"),
    "tool-call-one-fragment": ("tools",),
    "role-with-content": ("streaming",),
    "default-repeat-penalty": ("logprobs", "sampling", "penalties"),
    "reasoning-unsupported": ("thinking", "n", "json-object"),
    "reasoning-always": ("reasoning", "tools", "penalties", "max-tokens"),
    "reasoning-cut-content-null": ("reasoning", "core"),
    "reasoning-inline-always": ("logit-bias", "logprobs", "stop"),
    "near-tie-noise": ("seed", "sampling", "stop", "streaming", "usage", "penalties"),
    "seeded-draw-drift": ("seed", "sampling"),
    "byte-level-vocab": ("logit-bias",),
    "rate-limit-429": ("errors", "auth", "sampling"),
    "overloaded-503": ("errors", "n"),
    "server-error-once": ("core", "errors"),
    "slow-first-token": ("streaming",),
    "usage-on-finish-chunk": ("usage",),
    "forced-call-finish-stop": ("tools",),
    "stop-at-token-end": ("stop",),
    "models-max-model-len": ("max-tokens",),
    "models-meta-n-ctx": ("max-tokens",),
    "validation-422": ("errors",),
    "refusal-json-schema": ("json-schema", "json-object"),
}


def _profile_of(fault: str) -> str:
    return "seed" if catalog()[FAULTS[fault].requirement].applies_to("seed") else "openai"


def _composes(variant: str, fault: str) -> bool:
    v = VARIANTS[variant]
    return v.kind == "legit" and fault not in v.conflicts and v.profile in (None, _profile_of(fault))


def _pairs() -> list[tuple[str, str]]:
    legit = sorted(v for v in VARIANTS if VARIANTS[v].kind == "legit")
    turn: dict[str, int] = {}
    rr = 0
    out = []
    for fault in sorted(FAULTS):
        cap = catalog()[FAULTS[fault].requirement].capability
        near = [v for v in legit if cap in BEARS_ON.get(v, ()) and _composes(v, fault)]
        if near:
            k = turn.get(cap, 0)
            turn[cap] = k + 1
            out.append((fault, near[k % len(near)]))
            continue
        for _ in legit:
            v = legit[rr % len(legit)]
            rr += 1
            if _composes(v, fault):
                out.append((fault, v))
                break
    return out


def test_every_legitimate_variant_is_composed_with_faults() -> None:
    legit = {v for v in VARIANTS if VARIANTS[v].kind == "legit"}
    assert set(BEARS_ON) == legit
    for v in VARIANTS.values():
        assert set(v.conflicts) <= set(FAULTS), f"{v.name} names unknown faults in conflicts"
    assert {v for _, v in _pairs()} == legit


@pytest.mark.parametrize(("fault", "variant"), _pairs(), ids=lambda x: str(x))
def test_fault_is_detected_under_a_legitimate_variant(fault: str, variant: str, tmp_path: Path) -> None:
    req = FAULTS[fault].requirement
    scope = () if FAULTS[fault].run_wide else ("--only", req)
    code, results = _run(
        tmp_path, "--fault", fault, "--variant", variant, *scope, "--profile", _profile_of(fault),
        "--fail-on", "should",
    )
    verdict = results["requirements"][req]["verdict"]
    expected = "informational" if catalog()[req].level == "MAY" else "fail"
    assert verdict == expected, f"fault {fault} not detected under {variant}: {req} is {verdict}"
