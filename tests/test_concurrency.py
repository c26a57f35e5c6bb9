"""Many requests in flight from one process (issue 15): handles, the replay store, the shared budget, and
the proof that the engine's scheduling never changes a verdict."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.budget import Budget
from conformance.cli import main
from conformance.client import Client
from conformance.evidence import Exchange
from conformance.target import Limits, Target

TARGET = Target("https://api.example.test/v1", "m", limits=Limits(max_retries=0))


class Counting:
    """A mock target answering each request with a fresh completion and counting what reached it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
            n = self.calls
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return httpx.Response(200, json={"id": f"chatcmpl-{n}", "n": n})


def _client(target: Counting, **kw: Any) -> Client:
    return Client(TARGET, transport=httpx.MockTransport(target), **kw)


def test_a_handle_never_closes_the_shared_connections() -> None:
    with _client(Counting()) as root:
        h = root.handle(on_exchange=None)
        h.close()
        assert not root._http.is_closed
        assert root.chat({"model": "m", "messages": []}).status == 200


def test_requests_in_flight_are_bounded_by_the_concurrency() -> None:
    target = Counting(delay=0.05)
    with _client(target, concurrency=4) as root:
        body = {"model": "m", "messages": []}
        threads = [threading.Thread(target=root.chat, args=(body,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert target.calls == 16 and 2 <= target.most_in_flight <= 4


def test_budget_counts_every_thread(tmp_path: Path) -> None:
    for limit in (None, 1000):  # in memory, and in the shared file with a limit set
        budget = Budget(tmp_path / str(limit), max_requests=limit)

        def take(budget: Budget = budget) -> None:
            for _ in range(50):
                budget.acquire()
                budget.add_tokens(2)

        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        snap = budget.snapshot()
        assert (snap["requests"], snap["tokens"]) == (400, 800)


def _run(report: Path, *args: str) -> dict[str, Any]:
    code = main(["run", "--report-dir", str(report), *args])
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    results["_code"] = code
    return results


@pytest.mark.parametrize(
    "faults", [("usage-total-wrong", "max-tokens-overshoot"), ()], ids=["faulty", "clean"]
)
def test_verdicts_are_identical_at_concurrency_1_and_64(tmp_path: Path, faults: tuple[str, ...]) -> None:
    # Requirement ids: every one the run judges; a faulty server so that failures must agree too.
    # --ttft: a target slow enough that many checks are in flight at once
    args = ["--ttft", "0.1", *(a for f in faults for a in ("--fault", f))]
    serial = _run(tmp_path / "c1", "--concurrency", "1", *args)
    wide = _run(tmp_path / "c64", "--concurrency", "64", *args)
    assert serial["_code"] == wide["_code"] == (1 if faults else 0)
    verdicts = {k: (v["verdict"], v["reason"]) for k, v in serial["requirements"].items()}
    diff = {k: (v, (wide["requirements"][k]["verdict"], wide["requirements"][k]["reason"]))
            for k, v in verdicts.items() if wide["requirements"][k]["verdict"] != v[0]}
    assert diff == {}
    # the same requests (retries included) and tokens: concurrency changes when, never what, is sent
    for key in ("requests", "prompt_tokens", "completion_tokens"):
        assert serial["cost"][key] == wide["cost"][key], key


class Dropping:
    """A transport whose pooled connection was closed by the server: the first ``drops`` requests end before
    any response byte, as httpx reports a keep-alive connection the server closed under the request."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.drops:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)  # noqa: E501
        return httpx.Response(200, json={"id": "chatcmpl-1"})


def test_a_stale_keep_alive_connection_is_sent_again_once() -> None:
    # the request went out on a reused connection (no new one opened): not the target's answer
    once = Dropping(1)
    with Client(TARGET, transport=httpx.MockTransport(once)) as c:
        ex = c.chat({"model": "m", "messages": []})
    assert once.calls == 2 and ex.status == 200 and ex.transport_error is None
    always = Dropping(9)
    with Client(TARGET, transport=httpx.MockTransport(always)) as c:
        ex = c.chat({"model": "m", "messages": []})
    assert always.calls == 2 and ex.status is None
    assert ex.transport_error == (
        "connection closed before response headers: Server disconnected without sending a response."
    )


def test_chat_many_sends_together_and_keeps_the_order() -> None:
    target = Counting(delay=0.05)
    seen: list[Exchange] = []
    bodies = [({"model": "m", "messages": [{"role": "user", "content": str(i)}]}, f"#{i}") for i in range(8)]
    with _client(target, concurrency=8) as root:
        h = root.handle(on_exchange=seen.append)
        answers = h.chat_many(bodies)
    assert target.most_in_flight >= 2  # together
    assert [a.label for a in answers] == [f"#{i}" for i in range(8)]  # type: ignore[union-attr]
    assert seen == answers  # the evidence in the order of the requests, whatever order they came back in


def test_chat_many_gives_a_not_now_as_its_unanswered() -> None:
    from conformance.violations import Unanswered

    def limited(request: httpx.Request) -> httpx.Response:
        if b'"1"' in request.content:
            return httpx.Response(429, headers={"Retry-After": "1000"}, json={"error": {"message": "slow"}})
        return httpx.Response(200, json={"id": "x"})

    seen: list[Exchange] = []
    with Client(TARGET, transport=httpx.MockTransport(limited), concurrency=4, raise_unanswered=True) as c:
        answers = c.handle(on_exchange=seen.append).chat_many(
            [({"model": "m", "messages": [{"role": "user", "content": str(i)}]}, f"#{i}") for i in range(3)]
        )
    assert isinstance(answers[1], Unanswered) and answers[1].exchange.status == 429  # type: ignore[attr-defined]
    assert [e.status for e in seen] == [200, 429, 200]
