"""n: several choices in one response, all counted in usage."""

from __future__ import annotations

from typing import Any

from conformance.checks._support import body, finish_of, ok_json, usage_of
from conformance.engine.registry import check
from conformance.violations import Inconclusive

N = 2
MAX = 4


def _two(shared: Any, target: Any) -> Any:
    return shared("n-2", body(target, n=N, max_tokens=MAX), label=f"n={N}, max_tokens {MAX}")


@check("N-CHOICES-COUNT")
def test_n_choices(shared, judge, conformance_target):
    ex = _two(shared, conformance_target)
    data = ok_json(ex, f"n={N}")
    choices = data.get("choices")
    judge.require(isinstance(choices, list), "N-CHOICES-COUNT", "choices is not an array", path="$.choices",
                  expected="array", received=choices, exchange=ex)
    judge.check(len(choices) == N, "N-CHOICES-COUNT", f"n={N} did not give {N} choices", path="$.choices",
                expected=N, received=len(choices), exchange=ex)
    indices = [c.get("index") if isinstance(c, dict) else None for c in choices]
    judge.check(sorted(i for i in indices if isinstance(i, int)) == list(range(N)) and len(indices) == N,
                "N-CHOICES-COUNT", "the choices are not indexed 0..n-1", path="$.choices[*].index",
                expected=list(range(N)), received=indices, exchange=ex)


@check("N-USAGE-COUNTS-ALL")
def test_n_usage_counts_every_choice(shared, judge, conformance_target):
    ex = _two(shared, conformance_target)
    data = ok_json(ex, f"n={N}")
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != N:
        raise Inconclusive(f"n={N} did not give {N} choices (judged by N-CHOICES-COUNT)")
    finishes = [finish_of(data, i) for i in range(N)]
    if finishes != ["length"] * N:
        # a choice ended early: its token count is unknown, so the sum cannot be checked exactly
        raise Inconclusive(f"not every choice ran to max_tokens (finish_reasons {finishes})")
    ct = usage_of(data)
    judge.require(ct is not None, "N-USAGE-COUNTS-ALL", "usage.completion_tokens is missing",
                  path="$.usage.completion_tokens", expected="integer", received=data.get("usage"),
                  exchange=ex)
    judge.check(ct == N * MAX, "N-USAGE-COUNTS-ALL",
                f"{N} choices each cut at max_tokens {MAX} are not all counted in completion_tokens",
                path="$.usage.completion_tokens", expected=N * MAX, received=ct, exchange=ex)
