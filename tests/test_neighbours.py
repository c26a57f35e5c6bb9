"""A check's named neighbours (``@check(..., neighbours=(...))``, spec/DECISIONS.md#neighbours) are real fault
modes of the reference server, each breaking one of the check's own requirements: the kill matrix then proves
the check fails on the wrong server it was built to tell from a conforming one."""

from __future__ import annotations

import conformance.checks  # noqa: F401 - registers every check
from conformance.engine.registry import CHECKS
from conformance.reference.faults import FAULTS


def test_every_named_neighbour_is_a_fault_of_one_of_the_checks_requirements() -> None:
    named = {key: c for key, c in CHECKS.items() if c.neighbours}
    assert named, "no check names its neighbours"
    for key, c in named.items():
        for name in c.neighbours:
            assert name in FAULTS, f"{key} names {name!r}, which is not a fault mode of FAULTS"
            assert FAULTS[name].requirement in c.requirements, (
                f"{key} names {name!r}, whose requirement {FAULTS[name].requirement} is not among the "
                f"check's {c.requirements}")


def test_neighbours_of_issue_24_are_named() -> None:
    """The wrong neighbours issue 24 found on servers the authors never saw are each named by a check."""
    named = {n for c in CHECKS.values() for n in c.neighbours}
    for fault in ("tool-required-as-auto", "history-counted-not-used", "stream-usage-last-message",
                  "stream-usage-first-choice", "reasoning-tokens-uncounted", "tool-call-id-reused",
                  "top-k-fraction-accepted", "presence-penalty-ignored-confident", "seed-ignored"):
        if fault in FAULTS:
            assert fault in named, f"no check names the fault {fault} as its neighbour"
