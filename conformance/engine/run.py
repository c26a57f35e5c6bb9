"""The engine: every selected check run ONCE, ``--concurrency`` at a time, each ending in a ``CheckRecord``.

There is no first pass and no replay of a check's own requests: a check's function is called once, on its
own handle of the run's one client (connections, budget and in-flight limit shared), and what it judged is
its record. A request several checks judge (``shared``) is sent once: the first check to ask sends it, the
others wait for its answer (spec/DECISIONS.md#engine).

The engine never imports the checks: a front-end imports ``conformance.checks`` (which fills
``registry.CHECKS``) and hands the selected ``Check``s to ``Engine``.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from conformance.engine.registry import PREPARES, Check, ordered
from conformance.records import CheckRecord, Outcome, SkipKind

_MAX_ERROR = 3000


@dataclass
class RunOptions:
    """What a run's checks may read besides the target (the generated phase's draws and their seed)."""

    examples: int | None = 15
    hypothesis_seed: int = 0
    no_prefetch: bool = False
    scratch: dict[str, Any] = field(default_factory=dict)  # per-run caches of the checks (drawn requests)


class SharedExchanges:
    """``shared(key, body, **kw)``: one exchange sent once per run and judged by every check that asks for it
    (each check's evidence gets it). The first check to ask sends it; the others wait for its answer. An
    asker whose sender got no answer (429/503 after the retries, the budget) asks again itself."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._futures: dict[str, Future[Any]] = {}

    def for_check(self, judge: Any, scope: str) -> Callable[..., Any]:
        def get(key: str, body: dict[str, Any] | None, **kw: Any) -> Any:
            while True:
                with self._lock:
                    fut = self._futures.get(key)
                    owner = fut is None
                    if owner:
                        fut = self._futures[key] = Future()
                assert fut is not None
                if not owner:
                    try:
                        ex = fut.result()
                    except BaseException:  # noqa: BLE001 - the sender's own outcome; this check asks again
                        continue
                    judge.exchanges.append(ex)
                    return ex
                h = self._root.handle(on_exchange=judge.exchanges.append, scope=scope)
                try:
                    ex = _send_shared(h, key, body, dict(kw))
                except BaseException as exc:
                    with self._lock:
                        self._futures.pop(key, None)
                    fut.set_exception(exc)
                    raise
                fut.set_result(ex)
                return ex

        return get

    def forget(self, xids: set[str]) -> None:
        """Drop the shared answers that are these exchanges (server errors): the next asker (a check run again
        after one) sends the request again."""
        with self._lock:
            for key, fut in list(self._futures.items()):
                if fut.done() and fut.exception() is None and getattr(fut.result(), "xid", None) in xids:
                    del self._futures[key]


def _send_shared(h: Any, key: str, body: dict[str, Any] | None, kw: dict[str, Any]) -> Any:
    label = kw.pop("label", key)
    if body is None:
        return h.get(kw.pop("path"), label=label, **kw)
    return h.chat(body, label=label, **kw)


@dataclass
class CheckContext:
    """What a run gives its checks. A check's arguments are named after these fields (``client``, ``judge``
    and ``shared`` are made for each check) or after its case's values."""

    conformance_target: Any
    profile: Any
    capabilities: dict[str, dict[str, Any]]
    options: RunOptions
    root: Any  # the checks' client (conformance.client.Client)
    transport: Any = None  # a replay's transport: told which check asks (one check at a time)
    shared: SharedExchanges = field(init=False)

    def __post_init__(self) -> None:
        self.shared = SharedExchanges(self.root)


def _unsupported(chk: Check, capabilities: dict[str, dict[str, Any]]) -> tuple[SkipKind, str] | None:
    """Why a check of an optional capability the target does not offer (or, in a replay, one whose discovery
    probe the recording lacks) is not run; None when it runs."""
    from conformance.catalog import catalog

    for rid in chk.requirements:
        req = catalog().get(rid)
        if req is None:
            continue
        info = capabilities.get(req.capability)
        if info is not None and not info.get("supported", True):
            why = info.get("reason", "declared unsupported")
            return SkipKind.UNSUPPORTED, f"unsupported: {req.capability}: {why}"
        if info is not None and info.get("source") == "not recorded":
            return SkipKind.NOT_RECORDED, str(info.get("reason"))
    return None


def run_check(chk: Check, ctx: CheckContext) -> CheckRecord | None:
    """Run one check and say what became of it. None when the run was stopped while it ran (an interruption:
    it judged nothing and is not a record). ``BudgetExhausted`` is recorded (skipped, kind budget) and raised
    again for the engine to stop.

    A check that could not decide because one of its requests was answered with a server error
    (``ServerError``: 500, 502, 504, ...) is run again after a pause (``SERVER_ERROR_STANDS`` tries in all): a
    one-off (a gateway's 502, a worker's restart) then gets its answer and the check its verdict. The same
    request answered 500 on every try stands: the check judges it (an invalid request: ERROR-NO-5XX), and
    each repeat carries ``asked_again`` (the first answer's xid), which the run-wide judge of
    CORE-REQUEST-JSON reads: a valid request that always fails is the target's finding, not an unjudged check
    (spec/DECISIONS.md, "A server error is asked twice"). The record holds every try's exchanges in order. A
    shared exchange answered 5xx is asked again too (``SharedExchanges.forget``)."""
    from conformance.violations import ASKED_BEFORE, SERVER_ERROR_STANDS

    rec, failed = _run_once(chk, ctx)
    tries = 1
    while rec is not None and failed and tries < SERVER_ERROR_STANDS:
        errors = list({str(ex.get("xid")): ex for ex in rec.exchanges if _server_error(ex)}.values())
        times = Counter(_request_of(ex) for ex in errors)
        first = {_request_of(ex): str(ex.get("xid")) for ex in reversed(errors)}  # the earliest wins
        ctx.shared.forget({str(ex.get("xid")) for ex in errors})
        if ctx.transport is None:  # live: a restarting worker gets a moment (a replay answers at once)
            ctx.root.pause(PAUSE_S * tries)
        token = ASKED_BEFORE.set(dict(times))
        try:
            nxt, failed = _run_once(chk, ctx)
        except _Budget as b:
            raise _Budget(_merged(rec, b.record, first), b.exc) from None
        finally:
            ASKED_BEFORE.reset(token)
        tries += 1
        if nxt is None:
            return None
        if nxt.skip_kind is SkipKind.NOT_RECORDED:  # a replay of a recording made without this try
            break
        rec = _merged(rec, nxt, first)
    return rec


PAUSE_S = 0.5  # before a check's second try (and twice that before its third)


def _request_of(ex: dict[str, Any]) -> tuple[str, str, str | None]:
    return str(ex.get("method")), str(ex.get("url")), ex.get("request_body")


def _server_error(ex: dict[str, Any]) -> bool:
    status = ex.get("status")
    return isinstance(status, int) and status >= 500 and status != 503


def _merged(before: CheckRecord, again: CheckRecord, asked: dict[tuple[str, str, str | None], str]
            ) -> CheckRecord:
    """The record of a check run again: the new try's verdict, every try's exchanges (the new try's
    requests that repeat one answered 5xx before marked ``asked_again``)."""
    seen = {str(ex.get("xid")) for ex in before.exchanges}
    new: list[dict[str, Any]] = []
    for ex in again.exchanges:
        earlier = asked.get(_request_of(ex))
        if earlier is not None and str(ex.get("xid")) not in seen:
            ex = {**ex, "asked_again": earlier}
        new.append(ex)
    shift = len(before.exchanges)
    again.violations = [
        {**v, "exchange": v["exchange"] + shift} if isinstance(v.get("exchange"), int) else v
        for v in again.violations
    ]
    again.exchanges = [*before.exchanges, *new]
    again.duration += before.duration
    if again.skip_kind is SkipKind.INCONCLUSIVE and any(_server_error(ex) for ex in new):
        repeated = any(ex.get("asked_again") and _server_error(ex) and not ex.get("refusal_expected")
                       for ex in new)
        again.skip_reason += (
            " (the check was run again after a server error, and met one again"
            + (": a request answered 5xx on every try is judged run-wide, CORE-REQUEST-JSON)" if repeated
               else ")"))
    return again


def _run_once(chk: Check, ctx: CheckContext) -> tuple[CheckRecord | None, bool]:
    """Run one check once: its record (None: stopped while it ran) and whether it could not decide because
    a request was answered with a server error that does not stand yet (``ServerError``)."""
    from conformance.client import RunAborted
    from conformance.errors import BudgetExhausted
    from conformance.har import NotRecorded
    from conformance.violations import Inconclusive, Judge, ServerError, Skipped, Unanswered

    judge = Judge(requirements=chk.requirements, asks_again=True)
    rec = CheckRecord(nodeid=chk.key, requirements=list(chk.requirements), outcome=Outcome.PASSED)
    t0 = time.perf_counter()
    budget: BudgetExhausted | None = None
    server_error = False
    try:
        why = _unsupported(chk, ctx.capabilities)
        if why is not None:
            raise Skipped(why[1], why[0])
        made = {
            "judge": judge,
            "client": ctx.root.handle(on_exchange=judge.exchanges.append, scope=chk.key),
            "shared": ctx.shared.for_check(judge, chk.key),
            "conformance_target": ctx.conformance_target,
            "profile": ctx.profile,
            "capabilities": ctx.capabilities,
            "options": ctx.options,
        }
        args: dict[str, Any] = {}
        for name in chk.argnames:
            if name in chk.params:
                args[name] = chk.params[name]
            elif name in made:
                args[name] = made[name]
            else:
                raise TypeError(f"check {chk.key} asks for {name!r}: a check takes "
                                f"{', '.join(sorted(made))} or its case's values")
        if ctx.transport is not None:
            ctx.transport.asking = chk.key
        try:
            chk.func(**args)
        finally:
            if ctx.transport is not None:
                ctx.transport.asking = None
        if judge.violations:
            rec.outcome = Outcome.FAILED
    except RunAborted:
        return None, False
    except Skipped as exc:
        rec.outcome, rec.skip_kind, rec.skip_reason = Outcome.SKIPPED, exc.kind, exc.reason
    except NotRecorded as exc:  # a replay's request the recording lacks: never judged
        rec.outcome, rec.skip_kind, rec.skip_reason = Outcome.SKIPPED, SkipKind.NOT_RECORDED, str(exc)
    except Unanswered as exc:  # 429/503 after the retries, or no answer at all
        judge.judged.clear()
        rec.outcome, rec.skip_kind = Outcome.SKIPPED, SkipKind.UNANSWERED
        rec.skip_reason = f"inconclusive: {exc}"
    except Inconclusive as exc:  # what it judged before it gave up is not a pass
        server_error = isinstance(exc, ServerError)
        judge.judged.clear()
        rec.outcome, rec.skip_kind = Outcome.SKIPPED, SkipKind.INCONCLUSIVE
        rec.skip_reason = f"inconclusive: {exc}"
    except BudgetExhausted as exc:
        budget = exc
        rec.outcome, rec.skip_kind = Outcome.SKIPPED, SkipKind.BUDGET
        rec.skip_reason = f"not run: budget exhausted: {exc}"
    except AssertionError as exc:
        if judge.violations:  # judge.require stopped it (a ViolationError), or a bare assert after one
            rec.outcome = Outcome.FAILED
        else:  # a bare assert in a check (no Violation naming a requirement): the check's defect
            rec.outcome = Outcome.ERROR
            rec.error = "check failed without a violation: " + str(exc)[:2000]
    except Exception as exc:  # noqa: BLE001 - the suite's own fault, never the target's
        rec.outcome = Outcome.ERROR
        from conformance.evidence import PARSE_LOCK

        with PARSE_LOCK:  # CPython 3.11 parses source to place a traceback's carets (evidence.PARSE_LOCK)
            head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            rec.error = head + "\n" + traceback.format_exc()[-_MAX_ERROR:]
    rec.duration = time.perf_counter() - t0
    rec.judged = sorted(judge.judged)
    rec.violations = [vars(v) for v in judge.violations]
    rec.exchanges = [ex.to_dict() for ex in judge.exchanges]
    if budget is not None:
        raise _Budget(rec, budget)
    return rec, server_error


def _flooded(rec: CheckRecord) -> bool:
    """Whether one of the check's answers was cut at the suite's byte cap (a target that floods)."""
    return any(ex.get("body_truncated") for ex in rec.exchanges)


class _Budget(Exception):
    """A check stopped by the spent budget: its record, and the run stops taking checks."""

    def __init__(self, record: CheckRecord, exc: Exception) -> None:
        super().__init__(str(exc))
        self.record = record
        self.exc = exc


class Engine:
    """Runs ``checks`` once each over ``ctx``, ``concurrency`` at a time (threads; the client's semaphore
    holds the requests in flight to the same number). ``start()`` returns at once; ``record(key)`` waits for
    one check's record; ``stop()`` ends the run now (a Ctrl-C: requests in flight are cut)."""

    def __init__(self, ctx: CheckContext, checks: Sequence[Check], *, concurrency: int = 1,
                 on_record: Callable[[CheckRecord], None] | None = None) -> None:
        self.ctx = ctx
        self.checks = ordered(checks)
        self.concurrency = max(1, concurrency)
        self.on_record = on_record
        self.stopped = threading.Event()
        self.flooded = threading.Event()  # an answer hit a byte cap: the checks left run one at a time
        self.stop_reason: str | None = None  # "budget exhausted: ..." when the budget stopped the run
        self.cleanups: list[Callable[[], Any]] = []
        self._futures: dict[str, Future[CheckRecord | None]] = {c.key: Future() for c in self.checks}
        self._threads: list[threading.Thread] = []
        self.keys = frozenset(self._futures)

    # ---- before the checks: each module's prepare (work ahead) -----------------------------------------
    def _prepare(self) -> set[str]:
        """Call each check module's ``prepare`` with its selected checks; the modules that started work."""
        if self.ctx.options.no_prefetch:
            return set()
        ahead: set[str] = set()
        by_module: dict[str, list[Check]] = {}
        for c in self.checks:
            by_module.setdefault(c.module, []).append(c)
        ctx = self.ctx
        known = {"options": ctx.options, "conformance_target": ctx.conformance_target,
                 "profile": ctx.profile, "capabilities": ctx.capabilities}
        for module, selected in by_module.items():
            fn = PREPARES.get(module)
            if fn is None:
                continue
            args = {n: (selected if n == "checks" else known[n]) for n in inspect.signature(fn).parameters}
            cleanup = fn(**args)
            if cleanup is not None:
                self.cleanups.append(cleanup)
                ahead.add(module)
        return ahead

    def start(self) -> None:
        ahead = self._prepare()
        if ahead:
            # one at a time: what is drawn ahead runs last (made while the others run); many at a time: its
            # long chains of dependent requests start first and wait for their draws in their own threads
            first = self.concurrency > 1
            self.checks.sort(key=lambda c: (c.module in ahead) != first)
        todo: queue.SimpleQueue[Check] = queue.SimpleQueue()
        for c in self.checks:
            todo.put(c)

        def worker(i: int) -> None:
            while True:
                if i > 0 and self.flooded.is_set():  # a target that floods: the rest one check at a time
                    return
                try:
                    chk = todo.get_nowait()
                except queue.Empty:
                    return
                fut = self._futures[chk.key]
                if self.stopped.is_set():
                    fut.set_result(None)
                    continue
                try:
                    rec = run_check(chk, self.ctx)
                except _Budget as b:
                    rec = b.record
                    self.stop_reason = self.stop_reason or f"budget exhausted: {b}"
                    self.stopped.set()
                except BaseException as exc:  # noqa: BLE001 - never lose a waiter
                    fut.set_exception(exc)
                    continue
                if rec is not None and _flooded(rec):
                    self.flooded.set()  # memory stays near one byte cap per check in flight, then one
                if rec is not None and self.on_record is not None:
                    self.on_record(rec)
                fut.set_result(rec)

        # more threads than requests in flight when many are (a check waiting for a shared exchange another
        # check is fetching must not hold a sending slot); one thread at concurrency 1. Daemon threads: a
        # Ctrl-C never waits for one still waiting on the target.
        n = 1 if self.concurrency <= 1 else min(len(self.checks), max(4 * self.concurrency, 32), 256)
        self._threads = [
            threading.Thread(target=worker, args=(i,), name=f"conformance-check-{i}", daemon=True)
            for i in range(max(1, n))
        ]
        for t in self._threads:
            t.start()

    def record(self, key: str) -> CheckRecord | None:
        """The record of check ``key`` once it ran (None: the run stopped before it, or while it ran)."""
        return self._futures[key].result()

    def done(self, key: str) -> bool:
        return self._futures[key].done()

    def records(self) -> list[CheckRecord]:
        """Every record made so far, in the run's order."""
        out: list[CheckRecord] = []
        for c in self.checks:
            fut = self._futures[c.key]
            rec = fut.result() if fut.done() and fut.exception() is None else None
            if rec is not None:
                out.append(rec)
        return out

    def stop(self) -> None:
        """Stop taking checks, and end the requests in flight now."""
        self.stopped.set()
        self.ctx.root.abort()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            if t.ident is None:  # stopped while the threads were starting: this one never ran
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for cleanup in self.cleanups:
            try:
                cleanup()
            except Exception:  # noqa: BLE001, S110 - a helper that is already gone
                pass
        self.cleanups.clear()

    def run(self) -> list[CheckRecord]:
        """Run every check and return the records (the whole run, in the caller's thread)."""
        self.start()
        try:
            self.join()
        finally:
            self.close()
        return self.records()
