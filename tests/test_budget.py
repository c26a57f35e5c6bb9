"""The run budget: counters and the rate limit shared by processes through a state directory."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from conformance import budget as budget_module
from conformance.budget import FREE_INTERVAL, LIMIT_MARGIN, MAX_INTERVAL, MIN_INTERVAL, RECOVERY, Budget
from conformance.errors import BudgetExhausted


def _ctx() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _spend(state_dir: str, max_requests: int, rate: float | None, out: multiprocessing.Queue) -> None:
    budget = Budget(Path(state_dir), max_requests=max_requests, max_tokens_total=None, rate_limit=rate)
    stamps: list[float] = []
    refused = 0
    for _ in range(40):
        try:
            budget.acquire()
        except BudgetExhausted:
            refused += 1
            continue
        stamps.append(time.monotonic())
    out.put((len(stamps), refused, stamps))


def _run(state_dir: Path, n_procs: int, max_requests: int, rate: float | None) -> list[tuple[int, int, list]]:
    ctx = _ctx()
    out = ctx.Queue()
    args = (str(state_dir), max_requests, rate, out)
    procs = [ctx.Process(target=_spend, args=args) for _ in range(n_procs)]  # type: ignore[attr-defined]
    for p in procs:
        p.start()
    results = [out.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return results


def test_two_processes_never_exceed_max_requests(tmp_path: Path) -> None:
    results = _run(tmp_path, 2, 25, None)
    granted = sum(r[0] for r in results)
    assert granted == 25
    assert sum(r[1] for r in results) == 80 - 25
    snap = Budget(tmp_path, max_requests=25).snapshot()
    assert snap["requests"] == 25


def test_shared_rate_limit_spaces_requests_across_processes(tmp_path: Path) -> None:
    t0 = time.monotonic()
    results = _run(tmp_path, 2, 10, 20.0)  # 10 granted in all, at 20 rps
    wall = time.monotonic() - t0
    stamps = sorted(s for r in results for s in r[2])
    assert len(stamps) == 10
    assert stamps[-1] - stamps[0] >= 0.4  # 9 gaps of 0.05 s; a lower bound only
    assert wall >= 0.4


def test_rate_limit_in_one_process(tmp_path: Path) -> None:
    budget = Budget(tmp_path, max_requests=None, max_tokens_total=None, rate_limit=20.0)
    t0 = time.monotonic()
    for _ in range(10):
        budget.acquire()
    assert time.monotonic() - t0 >= 0.4


def test_token_budget_lets_the_crossing_request_finish(tmp_path: Path) -> None:
    budget = Budget(tmp_path, max_requests=None, max_tokens_total=100, rate_limit=None)
    budget.acquire()
    budget.add_tokens(60)
    budget.acquire()
    budget.add_tokens(60)  # crosses the line: no error here
    assert budget.exhausted == "token budget of 100 exhausted (--max-tokens-total)"
    with pytest.raises(BudgetExhausted, match=r"token budget of 100 exhausted \(--max-tokens-total\)"):
        budget.acquire()
    assert budget.snapshot() == {"requests": 2, "tokens": 120, "retries": 0, "max_requests": None,
                                 "max_tokens_total": 100, "rate_limit": None}


def test_request_budget_message_and_retries(tmp_path: Path) -> None:
    budget = Budget(tmp_path, max_requests=2)
    budget.acquire()
    budget.acquire(retry=True)
    with pytest.raises(BudgetExhausted, match=r"^request budget of 2 exhausted \(--max-requests\)$"):
        budget.acquire()
    snap = budget.snapshot()
    assert snap["requests"] == 2 and snap["retries"] == 1
    other = Budget(tmp_path, max_requests=2)  # another worker sees the same counters
    assert other.exhausted is not None


def test_unlimited_and_validation(tmp_path: Path) -> None:
    budget = Budget(tmp_path / "new" / "dir")
    for _ in range(50):
        budget.acquire()
    assert budget.snapshot()["requests"] == 50 and budget.exhausted is None
    with pytest.raises(ValueError):
        Budget(tmp_path, rate_limit=0)


# ---- the pace the target asks for (429/503, spec/DECISIONS.md#rate-limits) ------------------------------


def _throttle_then_send(state_dir: str, out: multiprocessing.Queue) -> None:
    budget = Budget(Path(state_dir))
    budget.throttled(429, 0.6)
    out.put(time.monotonic())


def _send_once(state_dir: str, out: multiprocessing.Queue) -> None:
    budget = Budget(Path(state_dir))
    budget.acquire()
    out.put(time.monotonic())


def test_a_throttle_in_one_worker_holds_every_worker(tmp_path: Path) -> None:
    ctx = _ctx()
    out = ctx.Queue()
    p = ctx.Process(target=_throttle_then_send, args=(str(tmp_path), out))  # type: ignore[attr-defined]
    p.start()
    throttled_at = out.get(timeout=20)
    p.join(10)
    q = ctx.Process(target=_send_once, args=(str(tmp_path), out))  # type: ignore[attr-defined]
    q.start()
    sent_at = out.get(timeout=20)
    q.join(10)
    assert sent_at - throttled_at >= 0.55  # held until the other worker's Retry-After


def test_429_slows_the_pace_and_answers_speed_it_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = Budget(tmp_path)
    assert budget.pace == {"interval": 0.0, "throttled": 0, "hold_left": 0.0}
    assert not (tmp_path / "pace.json").exists()  # no throttle, no pace state: one stat per request
    budget.throttled(429, 0.0)
    assert budget.pace["interval"] == MIN_INTERVAL
    budget.throttled(429, 0.0)
    budget.throttled(429, 0.0)
    assert budget.pace["interval"] == 4 * MIN_INTERVAL and budget.pace["throttled"] == 3
    t0 = time.monotonic()
    for _ in range(4):
        budget.acquire()
    assert time.monotonic() - t0 >= 3 * 4 * MIN_INTERVAL - 0.05  # three gaps of the slowed pace
    for _ in range(200):
        budget.answered()
    # never faster than the pace that drew the last 429 (2 * MIN_INTERVAL), with a margin, while remembered
    assert budget.pace["interval"] == pytest.approx(LIMIT_MARGIN * 2 * MIN_INTERVAL)
    monkeypatch.setattr(budget_module, "LIMIT_MEMORY_S", 0.0)  # forgotten: on to free again
    for _ in range(200):
        budget.answered()
    assert budget.pace["interval"] == 0.0  # under FREE_INTERVAL: free again
    assert 4 * MIN_INTERVAL * RECOVERY**200 < FREE_INTERVAL


def test_a_request_waiting_for_its_slot_is_held_by_a_throttle_that_comes_meanwhile(tmp_path: Path) -> None:
    """Slots are reserved ahead (every request in flight sleeps until its own); a 429 that comes while they
    sleep holds them too: they wake, see the hold and take a new slot after it, instead of all being sent into
    the same wall during it (a 12 requests/s limiter at 1 s to the first token: 73 retries a run, now 13)."""
    budget = Budget(tmp_path)
    for _ in range(3):
        budget.throttled(429, 0.0)  # interval 0.2 s, no hold
    budget.acquire()  # takes the slot now; the next one is 0.2 s ahead
    sent: list[float] = []
    t0 = time.monotonic()
    waiter = threading.Thread(target=lambda: (budget.acquire(), sent.append(time.monotonic() - t0)))
    waiter.start()
    time.sleep(0.05)
    budget.throttled(429, 0.5)  # while it sleeps towards its slot: hold the run until t0 + ~0.55
    waiter.join(5)
    assert sent and sent[0] >= 0.5, sent  # not at 0.2 s, into the hold


def test_a_429_at_a_free_pace_is_remembered_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first 429 of a run comes at a free pace (interval 0): the run was too fast, by how much is unknown.
    The answers that follow must not bring the pace back to free while that 429 is remembered: the clean-clone
    CI did (free, then the next burst of concurrent requests into the wall, 11 times over), and a 12
    requests/s limiter left 25 checks unanswered after 228 retries."""
    budget = Budget(tmp_path)
    budget.throttled(429, 0.0)
    for _ in range(500):
        budget.answered()
    assert budget.pace["interval"] == MIN_INTERVAL  # the fastest pace while remembered, never free
    monkeypatch.setattr(budget_module, "LIMIT_MEMORY_S", 0.0)
    for _ in range(100):
        budget.answered()
    assert budget.pace["interval"] == 0.0  # forgotten: free again


def test_the_pace_settles_under_a_rate_limit_instead_of_hitting_it_again(tmp_path: Path) -> None:
    """A 12 requests/s limiter: the pace that drew a 429 is remembered, so the answers that follow speed the
    run up to just slower than it, not back into the wall (each time costing retries)."""
    budget = Budget(tmp_path)
    limit = 1 / 12
    walls = 0
    for _ in range(2000):  # answers, and a 429 whenever the pace is faster than the limiter allows
        interval = budget.pace["interval"]
        if interval < limit:
            walls += 1
            budget.throttled(429, 0.0)
        else:
            budget.answered()
    assert budget.pace["interval"] >= limit
    assert walls <= 6  # a few 429s find the limit; then none


def test_503_holds_but_keeps_the_pace(tmp_path: Path) -> None:
    """A 503's Retry-After says when the engine is back: every request waits, the pace stays."""
    budget = Budget(tmp_path)
    budget.throttled(503, 0.3)
    assert budget.pace["interval"] == 0.0 and 0.2 < budget.pace["hold_left"] <= 0.3
    t0 = time.monotonic()
    budget.acquire()
    assert time.monotonic() - t0 >= 0.25


def test_a_429_inside_a_hold_does_not_slow_twice(tmp_path: Path) -> None:
    """Two workers' requests in flight at the same 429 wall: one slowdown, not two."""
    budget = Budget(tmp_path)
    budget.throttled(429, 1.0)
    budget.throttled(429, 1.0)
    assert budget.pace["interval"] == MIN_INTERVAL and budget.pace["throttled"] == 2


def test_a_retry_after_not_waited_for_changes_nothing(tmp_path: Path) -> None:
    budget = Budget(tmp_path)
    budget.throttled(429, None)
    assert budget.pace == {"interval": 0.0, "throttled": 0, "hold_left": 0.0}
    assert MAX_INTERVAL >= 1.0
