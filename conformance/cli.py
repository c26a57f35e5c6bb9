"""The ``chat-conformance`` command: run, serve, requirements, report.

Exit codes: 0 conformant, 1 not conformant, 2 usage error, 3 target unreachable or credentials refused
before any check ran, 4 internal error of the suite, 5 INCOMPLETE (the run's budget, ``--max-requests`` or
``--max-tokens-total``, or its time limit ``--max-duration`` ran out, or the target left too many checks
unanswered, before every check ran, and none of those that ran failed), 130 INTERRUPTED by Ctrl-C (SIGINT)
and 143 INTERRUPTED by SIGTERM (a CI job's timeout or cancel): 128 + the signal's number, as a shell says
it. A partial run (5, 130, 143) is never CONFORMANT: its reports are written all the same and say how many
requirements it judged. A fleet (``--model`` repeated, ``--fleet``) exits with the worst of its models'
codes: 130 > 143 > 2 > 4 > 3 > 5 > 1 > 0 (:data:`conformance.fleet.EXIT_SEVERITY`); an interrupted fleet
judges no further model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from conformance.engine.options import DEFAULTS
from conformance.errors import TIME_LIMIT, UsageError, stop_cause
from conformance.target import EMBEDDED_NOTE

if TYPE_CHECKING:
    from conformance.fleet import FleetTarget

__all__ = [
    "main", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_INTERNAL", "EXIT_INCOMPLETE",
    "EXIT_SIGINT", "EXIT_SIGTERM",
]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4
# a partial run (spec/DECISIONS.md#partial-runs), as conformance.results gives them
EXIT_INCOMPLETE, EXIT_SIGINT, EXIT_SIGTERM = 5, 130, 143
SERVE_KEY_ENV = "CONFORMANCE_SERVE_API_KEY"


_MIN_CONTEXT = 32  # the reference server's default answer (about 60 tokens) needs room beside the prompt


class _Parser(argparse.ArgumentParser):
    """Never abbreviates an option (``run --api-key sk-...`` is not ``--api-key-env sk-...``); arguments no
    option takes are named by option name only, never a value (a value shaped like a key: main masks it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            raise UsageError(_unknown_arguments(extras, getattr(ns, "command", None)))
        return ns

    def error(self, message: str) -> NoReturn:  # one line, names the fix (a key-shaped value: main masks it)
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# options a user may reach for to pass the key itself: the error says where the key goes instead
_KEY_OPTIONS = {"apikey", "key", "token", "apitoken", "accesstoken", "authtoken", "bearer", "auth",
                "authorization", "secret", "password", "openaiapikey"}


def _unknown_arguments(extras: list[str], command: str | None) -> str:
    """The error for arguments no option takes: the unknown options by name, never a value (``--api-key
    sk-...`` names ``--api-key`` and where the key goes)."""
    from conformance.evidence import looks_like_secret

    names = [t.split("=", 1)[0] for t in extras if t.startswith("-") and len(t) > 1]
    names = [n for n in names if not looks_like_secret(n.lstrip("-"))]
    help_hint = f"(see `chat-conformance{' ' + command if command else ''} --help`)"
    for n in names:
        if n.lstrip("-").replace("-", "").replace("_", "").lower() in _KEY_OPTIONS:
            if command == "serve":
                return (f"{n} is not an option: put the key to require in ${SERVE_KEY_ENV} (or give it with "
                        "--api-key)")
            return (f"{n} is not an option: put the key in $CONFORMANCE_API_KEY (or name another variable "
                    "with --api-key-env)")
    if names:
        return f"unrecognized arguments: {' '.join(names)} {help_hint}"
    what = "an argument" if len(extras) == 1 else f"{len(extras)} arguments"
    return f"{what} no option takes (a value without its option?) {help_hint}"


def _hide_secrets(text: str, argv: list[str]) -> str:
    """``text`` with every argument of ``argv`` that looks like a key masked (also when cut short): an error
    that quotes a value given on the command line (``--only 'sk-...' is neither ...``) never shows a key."""
    from conformance.evidence import MASK, looks_like_secret

    for token in argv:
        values = [token]
        if token.startswith("-") and "=" in token:
            values.append(token.split("=", 1)[1])
        elif token.startswith("-") and not token.startswith("--") and len(token) > 2:
            values.append(token[2:])  # -nVALUE
        for value in values:
            if looks_like_secret(value):
                for piece in sorted(_pieces_shown(value, text), key=len, reverse=True):
                    text = text.replace(piece, MASK)
    return text


def _pieces_shown(value: str, text: str) -> list[str]:
    """The pieces of ``value``, 8 characters or longer, that ``text`` shows (a value cut short, or quoted)."""
    pieces, i = [], 0
    while i + 8 <= len(value):
        j = i + 8
        if value[i:j] not in text:
            i += 1
            continue
        while j < len(value) and value[i : j + 1] in text:
            j += 1
        pieces.append(value[i:j])
        i = j
    return pieces


def _argv(argv: list[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="chat-conformance", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"chat-conformance {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run", help="run the suite against a target (the embedded reference server by default)"
    )
    r.add_argument(
        "--base-url",
        help="target base URL ending before /chat/completions, e.g. https://staging.example.com/v1",
    )
    r.add_argument(
        "--embedded",
        action="store_true",
        help="judge the embedded reference server (a self-test of the suite, not your endpoint); the default "
        "when neither --base-url nor --model is given",
    )
    r.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="model name to request (default: the reference server's); repeat it for a fleet: the models are "
        "judged one after another (so --rate-limit holds for the base URL as a whole), reports in "
        "DIR/<model>/, the matrix in DIR/matrix.md and DIR/matrix.html, the exit code the worst of theirs",
    )
    r.add_argument(
        "--fleet",
        metavar="FLEET.toml",
        help="judge the [[target]]s of this file (base_url, model; optional profile, expectations, "
        "api_key_env) in turn, like repeated --model; the fleet exits with its worst exit code "
        "(worst first: 130/143 interrupted > 2 usage > 4 internal > 3 unreachable > 5 incomplete > "
        "1 not conformant > 0)",
    )
    r.add_argument(
        "--api-key-env",
        default=DEFAULTS["api_key_env"],
        metavar="VAR",
        help="environment variable holding the API key",
    )
    r.add_argument(
        "--profile", default=DEFAULTS["profile"], metavar="NAME|FILE",
        help="seed (default), openai, or a .toml"
    )
    r.add_argument(
        "--report-dir", default="reports", metavar="DIR", help="where reports go (default reports/)"
    )
    r.add_argument("--expectations", metavar="FILE", help="TOML file of waived requirement ids")
    r.add_argument("--strict-waivers", action="store_true", help="a waived requirement that passes fails")
    r.add_argument("--level", choices=("must", "should", "may"), default=DEFAULTS["level"],
                   help="run up to this level")
    r.add_argument(
        "--fail-on",
        choices=("must", "should", "may"),
        default=DEFAULTS["fail_on"],
        help="fail the gate on failures at this level or stricter (default must; looser ones are warnings)",
    )
    r.add_argument("--only", action="append", default=[], metavar="ID|CAPABILITY", help="restrict the run")
    r.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="CAPABILITY",
        help="make an optional capability mandatory",
    )
    r.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help=f"requests in flight at once (default {DEFAULTS['concurrency']}; 1 sends one request at a time)",
    )
    r.add_argument(
        "-n", "--workers", default="0", metavar="N",
        help="N checks at once, or auto (one per CPU): the same as --concurrency N, which wins when both "
        "are given (worker processes once; the engine now runs every check in one process)",
    )
    r.add_argument("--max-requests", type=int, metavar="N", help="request budget")
    r.add_argument("--max-tokens-total", type=int, metavar="N", help="token budget")
    r.add_argument(
        "--max-duration", type=float, metavar="SECONDS",
        help="time limit of the run (of each model's, in a fleet): once reached it stops sending and writes "
        "its reports with what ran, INCOMPLETE (exit 5) unless a failure was found (default: none)",
    )
    r.add_argument(
        "--rate-limit", type=float, metavar="RPS", help="requests per second, all workers together"
    )
    r.add_argument("--timeout", type=float, default=DEFAULTS["timeout"], metavar="S",
                   help="deadline of one exchange")
    r.add_argument(
        "--idle-timeout", type=float, default=DEFAULTS["idle_timeout"], metavar="S",
        help="longest silence in a response"
    )
    r.add_argument(
        "--wait-ready", type=float, default=300.0, metavar="SECONDS",
        help="before any check, wait up to SECONDS for a target that answers 503 (model loading) or 429 with "
        "a Retry-After, printing a line per wait; then exit 3 (default 300, fits a deploy pipeline; 0: never "
        "wait)",
    )
    r.add_argument(
        "--wait-for-connect", action="store_true",
        help="within --wait-ready, also wait while the target refuses connections (a server still starting); "
        "without it a refused connection is exit 3 at once (a wrong host or port fails fast)",
    )
    r.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra header")
    r.add_argument("--insecure", action="store_true", help="accept an unverified TLS certificate")
    r.add_argument("--ca-bundle", metavar="FILE", help="CA bundle for TLS")
    r.add_argument("--skip-discovery", action="store_true", help="do not probe optional capabilities")
    r.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME",
        help="embedded reference server only: enable a fault mode (see `serve --list-faults`)",
    )
    r.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="embedded reference server only: a legitimate variant (see `serve --list-variants`)",
    )
    _latency_options(r, "embedded reference server only: ")
    r.add_argument(
        "--examples", type=int, metavar="N",
        help=f"property-based checks: generated examples (default {DEFAULTS['examples']})"
    )
    r.add_argument(
        "--hypothesis-seed", type=int, metavar="N",
        help=f"property-based checks: hypothesis seed (default {DEFAULTS['hypothesis_seed']})"
    )
    r.add_argument(
        "--record", metavar="FILE.har", help="write every exchange to FILE.har (HAR 1.2, key masked)"
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="more pytest output")
    _progress_option(r)

    rp = sub.add_parser(
        "replay",
        help="re-run the suite against a recording (`run --record`) instead of the network",
        description="Re-run the suite against a HAR recording written by `run --record`: no request leaves "
        "the machine; a check whose request the recording lacks is 'not recorded' (never judged nor failed).",
    )
    rp.add_argument("recording", metavar="FILE.har", help="the recording written by `run --record`")
    rp.add_argument(
        "--report-dir", default="reports", metavar="DIR", help="where reports go (default reports/)"
    )
    rp.add_argument("--profile", metavar="NAME|FILE", help="profile (default: the recorded run's)")
    rp.add_argument("--level", choices=("must", "should", "may"), default="may", help="run up to this level")
    rp.add_argument("--fail-on", choices=("must", "should", "may"), default="must", help="as for run")
    rp.add_argument("--only", action="append", default=[], metavar="ID|CAPABILITY", help="restrict the run")
    rp.add_argument("--require", action="append", default=[], metavar="CAPABILITY", help="as for run")
    rp.add_argument("--expectations", metavar="FILE", help="TOML file of waived requirement ids")
    rp.add_argument("--strict-waivers", action="store_true", help="a waived requirement that passes fails")
    rp.add_argument("-v", "--verbose", action="count", default=0, help="more pytest output")
    _progress_option(rp)

    s = sub.add_parser(
        "serve",
        help="serve the embedded reference server",
        description="Serve the embedded reference server (an OpenAI-compatible /v1/chat/completions and "
        "/v1/models) in the foreground until Ctrl-C.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks any free port (default: 8080)"
    )
    s.add_argument(
        "--api-key-env",
        default=SERVE_KEY_ENV,
        metavar="VAR",
        help="environment variable holding the bearer key to require; when it is set, a request without "
        f"that key is refused (default: {SERVE_KEY_ENV}; unset: no authentication)",
    )
    s.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require this bearer key; visible to every user in `ps`: prefer --api-key-env "
        "(default: none)",
    )
    s.add_argument(
        "--context-length",
        type=int,
        default=256,
        metavar="N",
        help="the model's context length in tokens, published by GET /v1/models (default: 256)",
    )
    s.add_argument(
        "--profile",
        default="seed",
        choices=("seed", "openai"),
        help="seed: a stop sequence stays at the end of the text; openai: the text is cut before it "
        "(default: seed)",
    )
    s.add_argument(
        "--fault", action="append", default=[], metavar="NAME", help="enable a fault mode (default: none)"
    )
    s.add_argument("--list-faults", action="store_true", help="list the fault modes and exit")
    s.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="enable a legitimate variant (default: none)",
    )
    s.add_argument("--list-variants", action="store_true", help="list the legitimate variants and exit")
    _latency_options(s, "")

    q = sub.add_parser("requirements", help="list the requirements catalog")
    q.add_argument("--level", choices=("must", "should", "may"), help="only this level")
    q.add_argument("--capability", help="only this capability")
    q.add_argument("--json", action="store_true", help="print JSON")

    rep = sub.add_parser("report", help="re-render reports from results.json files")
    rep.add_argument("results", nargs="+", help="results.json file(s); several give a matrix")
    rep.add_argument("--out", default="reports", help="output directory")

    d = sub.add_parser("diff", help="compare two runs; exits 1 on a regression")
    d.add_argument("old", help="the earlier results.json (or its report directory)")
    d.add_argument("new", help="the later results.json (or its report directory)")
    return p


def _version() -> str:
    from conformance import __version__

    return __version__


def _progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=("auto", "live", "lines", "off"),
        default="auto",
        help="the progress line on stderr while the run goes: live (redrawn in place), lines (a plain line "
        "every 10 s, for CI logs), off; auto (default): live on a terminal, lines otherwise",
    )


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        args = _build_parser().parse_args(argv)
        handler = {
            "run": _cmd_run_or_fleet,
            "replay": _cmd_replay,
            "serve": _cmd_serve,
            "requirements": _cmd_requirements,
            "report": _cmd_report,
            "diff": _cmd_diff,
        }[args.command]
        if args.command in ("run", "replay"):  # SIGTERM and --max-duration end a run as Ctrl-C does
            with _STOPS:
                code = handler(args)
        else:
            code = handler(args)
        sys.stdout.flush()  # a closed pipe (`| head`) shows here, inside the handler below
        return code
    except BrokenPipeError:  # the reader went away (`serve --list-variants | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        os.close(devnull)
        # a run whose console was cut short has no verdict to give: never report it conformant
        return EXIT_FAIL if args is not None and args.command == "run" else EXIT_OK
    except UsageError as exc:
        print(f"chat-conformance: error: {_hide_secrets(str(exc), _argv(argv))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # stopped outside a run's session (a run's own stop writes its reports)
        cause = stop_cause(exc)
        print(f"chat-conformance: interrupted ({cause})", file=sys.stderr)
        return _STOP_EXIT.get(cause, EXIT_SIGINT)
    except Exception as exc:  # the suite itself crashed: say so, never blame the target
        import traceback

        traceback.print_exc()
        print(f"chat-conformance: internal error ({type(exc).__name__}): please report this", file=sys.stderr)
        return EXIT_INTERNAL


# ---- stopping a run: Ctrl-C, SIGTERM, --max-duration ------------------------------------------------------

_STOP_EXIT = {"SIGINT": EXIT_SIGINT, "SIGTERM": EXIT_SIGTERM, TIME_LIMIT: EXIT_INCOMPLETE}


class _Stops:
    """Ctrl-C (SIGINT), SIGTERM (a CI job's timeout or cancel; SIGKILL follows a grace period of seconds) and
    ``--max-duration`` end a run one way: a ``KeyboardInterrupt`` naming its cause (``SIGTERM``,
    ``max-duration``), raised in the main thread, which pytest turns into a finished session: the plugin
    stops the first pass and the requests in flight, and writes every report, INTERRUPTED (INCOMPLETE for
    the time limit). Only the first stops the run: a later SIGTERM or time limit is ignored (a CI runner
    sends SIGINT, then SIGTERM), a second Ctrl-C stops at once; none once the session writes its reports.
    The previous handlers are restored on leaving. Outside the main thread nothing is installed (and
    ``--max-duration`` is not enforced)."""

    def __init__(self) -> None:
        self.cause: str | None = None
        self.finishing = False
        self._pending: str | None = None
        self._holding = 0  # inside held(): a stop is kept until it ends
        self._held: str | None = None
        self._saved: dict[int, Any] = {}
        self._timer: Any = None

    def __enter__(self) -> _Stops:
        import signal
        import threading

        self.cause, self.finishing, self._pending, self._held = None, False, None, None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        self.cancel_time_limit()
        for sig, previous in self._saved.items():
            if previous is not None:
                signal.signal(sig, previous)
        self._saved.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        cause, self._pending = self._pending or signal.Signals(signum).name, None
        if self.finishing:
            return
        if self.cause is None:
            self.cause = cause
            if self._holding:
                self._held = cause  # raised when held() ends
                return
            raise KeyboardInterrupt(cause)
        if cause == "SIGINT":  # a second Ctrl-C: stop now
            raise KeyboardInterrupt(self.cause)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A stretch a stop must not cut (imports: a KeyboardInterrupt raised inside one can leave a module
        lock held, and the thread importing beside it waits forever): the stop is raised when it ends."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self._held is not None:
            cause, self._held = self._held, None
            raise KeyboardInterrupt(cause)

    def start_run(self, max_duration: float | None) -> None:
        """A run (a fleet's model) starts: it may be stopped again; its time limit starts now."""
        import math
        import signal
        import threading

        self.cancel_time_limit()
        self.finishing = False
        if max_duration is None or not math.isfinite(max_duration) or not self._saved:
            return

        def fire() -> None:
            import _thread

            self._pending = TIME_LIMIT
            _thread.interrupt_main(signal.SIGINT)  # calls _handle in the main thread

        self._timer = threading.Timer(max_duration, fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel_time_limit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_STOPS = _Stops()


def _stopped_early(args: argparse.Namespace, base_url: str, model: str, cause: str, *, embedded: bool) -> int:
    """A run stopped before its engine judged anything (preflight, start-up): its reports are written all
    the same, by the run's one writer (INTERRUPTED, or INCOMPLETE for the time limit: 0 requirements
    judged)."""
    import time

    from conformance.engine.session import write_reports
    from conformance.profiles import load_profile
    from conformance.results import build_results
    from conformance.target import Target

    profile = load_profile(args.profile)
    now = time.time()
    results = build_results(
        [],
        target={
            "base_url": Target(base_url=base_url.rstrip("/"), model=model).display_url,
            "model": model,
            "profile": args.profile,
            "profile_name": profile.name,
            **({"embedded": True} if embedded else {}),
        },
        profile=profile.base,
        level=args.level,
        started=now,
        finished=now,
        cost={"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0},
        capabilities={},
        notes=[f"stopped ({cause}) before any check ran"],
        fail_on=args.fail_on,
        stopped_by=cause,
    )
    paths = write_reports(results, Path(args.report_dir))
    print(f"chat-conformance: {results['verdict']}", file=sys.stderr)
    for path in paths:
        print(f"chat-conformance: wrote {path}", file=sys.stderr)
    return int(results["exit_code"])


# ---- run ---------------------------------------------------------------------------------------------------


def _validate_run(args: argparse.Namespace) -> None:
    from conformance.catalog import check_selection
    from conformance.evidence import ENV_NAME, looks_like_secret
    from conformance.profiles import load_profile
    from conformance.target import key_env_unset

    # --api-key-env names a variable: a key given in its place is refused, never echoed (embedded run or not)
    if not os.environ.get(args.api_key_env) and (
        looks_like_secret(args.api_key_env) or not ENV_NAME.fullmatch(args.api_key_env)
    ):
        raise key_env_unset(args.api_key_env)
    load_profile(args.profile)
    check_selection(args.only, args.require)
    if args.expectations:
        from conformance.expectations import load_expectations

        load_expectations(args.expectations)
    if args.base_url is not None and not args.base_url.strip():
        raise UsageError(
            "--base-url is empty (an unset CI variable?): give the target's URL, e.g. "
            "--base-url https://staging.example.com/v1 (or --embedded, without it, for a self-test)"
        )
    if args.model is not None and not str(args.model).strip():
        raise UsageError("--model is empty (an unset CI variable?): give the model name the target serves")
    if args.embedded and args.base_url:
        raise UsageError("--embedded judges the embedded reference server: drop --base-url or --embedded")
    if not args.base_url and args.model and not _embedded_asked(args):
        raise UsageError(
            "--model without --base-url would judge the embedded reference server, not your endpoint: "
            "add --base-url URL (or --embedded for a self-test of the suite)"
        )
    if args.base_url:
        from conformance.target import check_base_url

        check_base_url(args.base_url)
        if not args.model:
            raise UsageError("--model is required with --base-url: give the model name the target serves")
        if args.fault:
            raise UsageError(
                "--fault applies to the embedded reference server only: drop --base-url or --fault"
            )
        if args.variant:
            raise UsageError(
                "--variant applies to the embedded reference server only: drop --base-url or --variant"
            )
        if args.ttft or args.tps is not None:
            raise UsageError(
                "--ttft/--tps apply to the embedded reference server only: drop --base-url or --ttft/--tps"
            )
        if (args.api_key_env != "CONFORMANCE_API_KEY" and not os.environ.get(args.api_key_env)
                and not getattr(args, "replay_api_key", None)):  # a replay's placeholder stands in
            raise key_env_unset(args.api_key_env)
    else:
        from conformance.reference.faults import FAULTS

        for f in args.fault:
            if f not in FAULTS:
                raise UsageError(
                    f"unknown fault {f!r}: list them with `chat-conformance serve --list-faults`"
                )
        _check_variants(args.variant)
    if args.record and Path(args.record).is_dir():
        raise UsageError(f"--record {args.record} is a folder: give a file name, e.g. {args.record}/run.har")
    if args.workers != "auto" and not args.workers.isdigit():
        raise UsageError(f"-n {args.workers!r} is not a number of workers: give e.g. -n 2 or -n auto")
    if args.concurrency is not None and not 1 <= args.concurrency <= 256:
        raise UsageError(
            f"--concurrency {args.concurrency} is out of range: give 1 to 256 requests in flight (default 32)"
        )
    if args.max_duration is not None and not args.max_duration > 0:
        raise UsageError(
            f"--max-duration {args.max_duration:g} is not positive: give the run's time limit in seconds, "
            "e.g. --max-duration 600"
        )
    if not 0 <= args.wait_ready < float("inf"):  # NaN fails too
        raise UsageError("--wait-ready is not 0 or more seconds: give e.g. --wait-ready 300 (0: never wait)")
    if args.wait_for_connect and args.wait_ready == 0:
        raise UsageError("--wait-for-connect waits within --wait-ready: give --wait-ready SECONDS above 0")
    _check_latency(args)


def _progress_mode(asked: str) -> str:
    """``auto``: redrawn in place on a terminal, a plain line now and then in a CI log."""
    if asked != "auto":
        return asked
    return "live" if sys.stderr.isatty() else "lines"


def _embedded_asked(args: argparse.Namespace) -> bool:
    """The embedded reference server was asked for by name: ``--embedded``, or an option that only it takes
    (``--fault``, ``--variant``, ``--ttft``, ``--tps``)."""
    return bool(args.embedded or args.fault or args.variant or args.ttft or args.tps is not None)


def _latency_options(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument(
        "--ttft", type=float, default=0.0, metavar="SECONDS",
        help=f"{prefix}answer like a real model: each completion's first token after SECONDS (default 0)",
    )
    p.add_argument(
        "--tps", type=float, default=None, metavar="TOKENS_PER_S",
        help=f"{prefix}answer like a real model: generate TOKENS_PER_S tokens per second (default: at once)",
    )


def _check_latency(args: argparse.Namespace) -> None:
    if args.ttft < 0:
        raise UsageError(f"--ttft {args.ttft:g} is negative: give seconds to the first token, e.g. --ttft 1")
    if args.tps is not None and args.tps <= 0:
        raise UsageError(f"--tps {args.tps:g} is not positive: give tokens per second, e.g. --tps 40")


def _check_variants(names: list[str]) -> None:
    from conformance.reference.variants import VARIANTS

    for v in names:
        if v not in VARIANTS:
            raise UsageError(
                f"unknown variant {v!r}: list them with `chat-conformance serve --list-variants`"
            )


def _preflight(
    base_url: str,
    model: str,
    api_key: str | None,
    verify: bool | str,
    timeout: float,
    *,
    wait_ready: float = 0.0,
    wait_for_connect: bool = False,
    headers: list[str] | None = None,
    api_key_env: str = "CONFORMANCE_API_KEY",
) -> None:
    """Before any check: the target is there, speaks the chat API, serves the model, and is ready (waited
    for up to ``wait_ready`` seconds, a line on stderr per wait): :func:`conformance.preflight.preflight`.
    ``UsageError`` (exit 2: the model is not served) or ``TargetUnreachable`` (exit 3), one line each."""
    from conformance.preflight import parse_headers, preflight
    from conformance.target import Limits, Target

    target = Target(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key=api_key,
        api_key_env=api_key_env,  # a refused or missing key is named by its variable
        extra_headers=parse_headers(headers or []),
        verify_tls=verify,
        limits=Limits(connect_timeout=min(5.0, timeout), idle_timeout=timeout, total_timeout=timeout),
    )

    def say(line: str) -> None:
        print(f"chat-conformance: {line}", file=sys.stderr, flush=True)

    preflight(target, wait_ready=wait_ready, wait_for_connect=wait_for_connect, on_wait=say)


def _preflight_while_loading(
    base_url: str, model: str, api_key: str | None, verify: bool | str, timeout: float, **options: Any
) -> None:
    """``_preflight``, while this thread imports what the run will import anyway (the checks' helpers,
    hypothesis, the results): against a slow target the first answer takes a second, the imports as long."""
    import threading

    failure: list[BaseException] = []

    def send() -> None:
        try:
            _preflight(base_url, model, api_key, verify, timeout, **options)
        except BaseException as exc:  # noqa: BLE001  # raised again in the caller's thread
            failure.append(exc)

    sender = threading.Thread(target=send, name="conformance-preflight", daemon=True)
    sender.start()
    with _STOPS.held():  # a stop lands after the imports, never inside one (the preflight imports too)
        import conformance.checks  # noqa: F401  (registers every check)
        import conformance.results  # noqa: F401

    sender.join()
    if failure:
        raise failure[0]


def _cmd_run(args: argparse.Namespace) -> int:
    from conformance.errors import TargetUnreachable

    _validate_run(args)
    _STOPS.start_run(getattr(args, "max_duration", None))
    server = None
    env_key = args.api_key_env
    base_url, model = args.base_url, args.model
    replay = getattr(args, "replay", None)
    if not base_url and not replay:
        from conformance.profiles import load_profile
        from conformance.reference.server import start_in_thread

        key = secrets.token_urlsafe(16)  # held here, handed to the run: never put in the environment
        server = start_in_thread(
            api_key=key,
            faults=tuple(args.fault),
            profile=load_profile(args.profile).base,
            variants=tuple(args.variant),
            **({"model_name": model} if model else {}),  # serve the model asked for (a fleet's each)
            ttft_s=args.ttft,
            tps=args.tps,
        )
        base_url, model = server.base_url, model or server.model
        print(
            f"chat-conformance: {EMBEDDED_NOTE}, at {base_url}"
            + (f" with faults {', '.join(args.fault)}" if args.fault else "")
            + (f" with variants {', '.join(args.variant)}" if args.variant else ""),
            file=sys.stderr,
        )
    try:
        verify: bool | str = False if args.insecure else (args.ca_bundle or True)
        try:
            if not replay:
                key_value = key if server is not None else (os.environ.get(env_key) or None)
                _preflight_while_loading(
                    base_url, model, key_value, verify, args.timeout, wait_ready=args.wait_ready,
                    wait_for_connect=args.wait_for_connect, headers=args.header, api_key_env=env_key,
                )
        except TargetUnreachable as exc:
            print(f"chat-conformance: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        from conformance.engine.options import RunConfig

        # every option of the table from the parsed flags of the same name; what the CLI decides itself
        # (the target, the console, the progress mode, the concurrency) over it
        cfg = RunConfig.from_values(lambda name: getattr(args, name, None))
        cfg.embedded = server is not None or getattr(args, "replay_embedded", False)
        cfg.console = True
        cfg.progress = _progress_mode(getattr(args, "progress", "auto"))
        cfg.base_url, cfg.model, cfg.api_key_env = base_url, model, env_key
        cfg.replay = replay
        cfg.concurrency = _concurrency(args)
        return _run_engine(cfg, verbose=args.verbose,
                           api_key=key if server is not None else getattr(args, "replay_api_key", None))
    except KeyboardInterrupt as exc:  # stopped before the run began (preflight): the reports say so
        return _stopped_early(args, base_url, model, stop_cause(exc), embedded=server is not None)
    finally:
        _STOPS.cancel_time_limit()
        if server is not None:
            server.stop(wait=False)  # the run is over: nothing waits on its last 0.1 s


REPLAY_KEY_ENV = "CONFORMANCE_REPLAY_API_KEY"


def _cmd_replay(args: argparse.Namespace) -> int:
    """``run`` against a recording: target, model and the generated checks' options come from it; the
    network and the embedded server are never used."""
    from conformance.har import load_har, run_info

    info = run_info(load_har(args.recording))
    if not info.get("base_url") or not info.get("model"):
        raise UsageError(f"{args.recording} has no recorded target (log._conformance): record it with "
                         "`chat-conformance run --record FILE.har`")
    run = _build_parser().parse_args(["run"])  # every run option at its default
    for name in ("report_dir", "level", "fail_on", "only", "require", "expectations", "strict_waivers",
                 "verbose", "progress"):
        setattr(run, name, getattr(args, name))
    run.profile = args.profile or info.get("profile") or "seed"
    run.base_url, run.model = info["base_url"], info["model"]
    run.examples, run.hypothesis_seed = info.get("examples"), info.get("hypothesis_seed")
    # discovery as recorded: the probes a recording holds are those its run sent (a probe it lacks makes the
    # capability unknown: its checks are "not recorded", never judged)
    run.require = args.require or list(info.get("require") or [])
    run.skip_discovery = bool(info.get("skip_discovery"))
    run.replay = args.recording
    run.replay_embedded = bool(info.get("embedded"))  # a self-test's recording is still a self-test
    run.replay_api_key = None
    if info.get("auth", True):  # the checks that need a key see one; it is sent nowhere
        # the reproducers name the variable the recorded run used; a placeholder stands in when it is unset
        # (handed to the run, never put in the environment)
        env = str(info.get("api_key_env") or REPLAY_KEY_ENV)
        if not env.isidentifier():
            env = REPLAY_KEY_ENV
        if not os.environ.get(env):
            run.replay_api_key = "replay-placeholder-key"
        run.api_key_env = env
    print(f"chat-conformance: replaying {args.recording} (model {run.model} at {run.base_url}); "
          "no request leaves this machine", file=sys.stderr)
    return _cmd_run(run)


def _concurrency(args: argparse.Namespace) -> int:
    """Requests in flight: ``--concurrency``, else ``-n N`` (worker processes once; now N checks at once in
    the one process), else the default."""
    if args.concurrency is not None:
        return int(args.concurrency)
    if args.workers not in ("0", None):
        return os.cpu_count() or 2 if args.workers == "auto" else max(1, int(args.workers))
    return int(DEFAULTS["concurrency"])


def _run_engine(cfg: Any, *, verbose: int = 0, api_key: str | None = None) -> int:
    """One run on the engine, in this process: discovery, every selected check once, the run judged, the
    reports written, the summary printed (the verdict its last line). A stop (Ctrl-C, SIGTERM, the time
    limit) ends the checks in flight; the reports say what ran."""
    from conformance.checks import run_wide  # importing the package registers every check
    from conformance.console import section_rule, summary_lines, verdict_line
    from conformance.engine.registry import CHECKS, ordered
    from conformance.engine.session import RunSession

    run = RunSession(cfg, api_key=api_key)
    run.start_progress()
    # the package's checks (a pytest run in this process may have registered others: they are its own)
    checks = [c for c in ordered(CHECKS.values())
              if c.module.startswith("conformance.checks.") and run.selects(c.requirements)]
    if run.progress is not None:
        run.progress.total = len(checks)

    def on_record(rec: Any) -> None:
        if run.progress is not None:
            run.progress.check_done()
        if verbose:
            from conformance.console import escape_controls

            why = rec.skip_reason or rec.error.split("\n", 1)[0]
            line = f"{rec.nodeid} {rec.outcome.value.upper()}"
            if verbose > 1 and why:
                line += f" ({why[:200]})"
            print(escape_controls(line), flush=True)

    try:
        try:
            engine = run.engine(checks, on_record=on_record)
            engine.start()
            run.phase("running the checks")
            engine.join()
        except KeyboardInterrupt as exc:
            run.interrupt(stop_cause(exc))
        _STOPS.finishing = True  # the reports are written whatever comes now
        run.settle()
        records = [r.to_dict() for r in run.current.records()] if run.current is not None else []
        results = run.finish(records, run_wide=run_wide, notes=[],
                             selected={r for c in checks for r in c.requirements} or None)
    finally:
        run.close()
    print(section_rule())
    for line in summary_lines(results, run.written):
        print(line)
    print(verdict_line(results), flush=True)
    return int(results["exit_code"])


# ---- a fleet: several models in one run ------------------------------------------------------------------


def _cmd_run_or_fleet(args: argparse.Namespace) -> int:
    """``--model`` given once or not at all (and no ``--fleet``): the single-model run, unchanged."""
    models: list[str] = args.model
    if args.fleet is None and len(models) <= 1:
        args.model = models[0] if models else None
        return _cmd_run(args)
    if args.record:
        raise UsageError("--record writes one model's run: record each model in its own run, or drop it")
    return _cmd_fleet(args)


_EXIT_MEANING = {
    0: "conformant",
    1: "not conformant",
    2: "usage error",
    3: "unreachable",
    4: "internal error",
    EXIT_INCOMPLETE: "incomplete",
    EXIT_SIGINT: "interrupted (SIGINT)",
    EXIT_SIGTERM: "interrupted (SIGTERM)",
}


def _fleet_targets(args: argparse.Namespace) -> list[FleetTarget]:
    from conformance.fleet import FleetTarget, load_fleet

    if args.fleet is not None:
        if args.model or args.base_url:
            raise UsageError(
                "--fleet lists the targets and their models: drop --model and --base-url, or drop --fleet"
            )
        return load_fleet(args.fleet)
    seen: set[str] = set()
    for m in args.model:
        if m in seen:
            raise UsageError(f"--model {m!r} is given twice: give each model of the fleet once")
        seen.add(m)
    return [FleetTarget(model=m, base_url=args.base_url) for m in args.model]


def _cmd_fleet(args: argparse.Namespace) -> int:
    """Judge each model of the fleet in turn, in this process, one after another: runs against one base URL
    never overlap, so ``--rate-limit`` holds for the base URL as a whole. Every target is checked before the
    first run (any mistake: exit 2, nothing run). Reports go to ``DIR/<model>/``, the matrix to
    ``DIR/matrix.md`` and ``DIR/matrix.html``; the exit code is the worst of the models'
    (:func:`conformance.fleet.worst_exit`)."""
    from conformance.fleet import folder_names, worst_exit

    targets = _fleet_targets(args)
    folders = folder_names(targets)
    root = Path(args.report_dir)
    runs: list[argparse.Namespace] = []
    for i, (t, folder) in enumerate(zip(targets, folders, strict=True), 1):
        ns = argparse.Namespace(**vars(args))
        ns.model, ns.base_url, ns.fleet = t.model, t.base_url, None
        ns.report_dir = str(root / folder)
        for key in ("profile", "expectations", "api_key_env"):
            if getattr(t, key) is not None:
                setattr(ns, key, getattr(t, key))
        try:
            _validate_run(ns)
        except UsageError as exc:
            raise UsageError(f"target {i} ({t.label()}): {exc}") from None
        runs.append(ns)
    print(
        f"chat-conformance: a fleet of {len(runs)} model(s), judged one after another; reports in {root}/",
        file=sys.stderr,
    )
    codes: list[int] = []
    results_list: list[dict[str, Any]] = []
    _run_fleet(targets, runs, codes, results_list)
    from conformance.reports.matrix import matrix_markdown, write_matrix

    root.mkdir(parents=True, exist_ok=True)
    html = write_matrix(results_list, root)
    md = root / "matrix.md"
    from conformance.files import write_atomic

    write_atomic(md, matrix_markdown(results_list))
    worst = worst_exit(codes)
    for t, code in zip(targets, codes, strict=True):
        print(f"chat-conformance: {t.label()}: exit {code} ({_EXIT_MEANING.get(code, '?')})", file=sys.stderr)
    print(
        f"chat-conformance: fleet exit {worst} (the worst of its models): matrix in {md} and {html}",
        file=sys.stderr,
    )
    return worst


def _run_fleet(
    targets: list[FleetTarget],
    runs: list[argparse.Namespace],
    codes: list[int],
    results_list: list[dict[str, Any]],
) -> None:
    """Run each target in turn; append its exit code and its matrix column. A run stopped by a signal
    stops the fleet: the models after it are not judged (their columns say so, with its exit code)."""
    stopped = 0
    for i, (t, ns) in enumerate(zip(targets, runs, strict=True), 1):
        fresh = Path(ns.report_dir) / "results.json"
        fresh.unlink(missing_ok=True)  # an earlier run's results must never stand for this one
        if stopped:
            codes.append(stopped)
            results_list.append(_fleet_column(t, ns, stopped, fresh))
            continue
        print(f"chat-conformance: [{i}/{len(runs)}] {t.label()} -> {ns.report_dir}/", file=sys.stderr)
        try:
            code = _cmd_run(ns)
        except UsageError as exc:
            print(f"chat-conformance: error: {t.label()}: {exc}", file=sys.stderr)
            code = EXIT_USAGE
        except Exception as exc:  # the suite crashed on this model: say so and judge the next one
            import traceback

            traceback.print_exc()
            print(
                f"chat-conformance: internal error ({type(exc).__name__}) on {t.label()}: please report this",
                file=sys.stderr,
            )
            code = EXIT_INTERNAL
        codes.append(code)
        results_list.append(_fleet_column(t, ns, code, fresh))
        if code in (EXIT_SIGINT, EXIT_SIGTERM):
            stopped = code


def _fleet_column(t: FleetTarget, ns: argparse.Namespace, code: int, path: Path) -> dict[str, Any]:
    """The model's results.json, or, where its run wrote none (unreachable, usage error), a column that
    says so: every model of the fleet has its column in the matrix."""
    if path.is_file():
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            pass
    return {
        "target": {"model": t.model, "base_url": t.base_url or "embedded reference server"},
        "profile": ns.profile,
        "verdict": f"NOT JUDGED (exit {code}: {_EXIT_MEANING.get(code, 'unknown')})",
        "exit_code": code,
        "level_reached": "none",
        "requirements": {},
    }


# ---- serve / requirements / report -----------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from conformance.reference.faults import FAULTS

    if args.list_faults:
        for f in FAULTS.values():
            print(f"{f.name:40} {f.requirement:36} {f.description}")
        return EXIT_OK
    if args.list_variants:
        from conformance.reference.variants import VARIANTS

        for v in VARIANTS.values():
            print(v.line())
        return EXIT_OK
    for f in args.fault:
        if f not in FAULTS:
            raise UsageError(f"unknown fault {f!r}: list them with `chat-conformance serve --list-faults`")
    _check_variants(args.variant)
    _check_latency(args)
    if args.context_length < _MIN_CONTEXT:
        raise UsageError(
            f"--context-length {args.context_length} is too small: give at least {_MIN_CONTEXT} tokens"
        )
    if args.api_key is not None:
        key: str | None = args.api_key
        auth = "auth on (key from --api-key)"
    else:
        key = os.environ.get(args.api_key_env) or None
        if key is None and args.api_key_env != SERVE_KEY_ENV:
            from conformance.target import key_env_unset

            raise key_env_unset(args.api_key_env, "the key to require")
        auth = (
            f"auth on (bearer key from ${args.api_key_env})"
            if key
            else f"auth off (set {SERVE_KEY_ENV} to require a key)"
        )
    import errno

    from conformance.reference.server import DEFAULT_MODEL, listen_socket, serve_forever

    try:
        sock = listen_socket(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {args.port} on {args.host} is in use: "
                "choose another --port, or --port 0 for any free port"
            ) from None
        raise UsageError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}): "
            "choose another --host or --port"
        ) from None
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    chosen = (("faults", args.fault), ("variants", args.variant))
    extras = "".join(f", {label} {', '.join(names)}" for label, names in chosen if names)
    print(
        f"chat-conformance: reference server at http://{host}:{port}/v1: model {DEFAULT_MODEL}, "
        f"profile {args.profile}, context length {args.context_length}, {auth}{extras}; Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        serve_forever(
            args.host,
            port,
            key,
            tuple(args.fault),
            args.profile,
            tuple(args.variant),
            context_length=args.context_length,
            sock=sock,
            ttft_s=args.ttft,
            tps=args.tps,
        )
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: the normal way to stop
        pass
    print("chat-conformance: reference server stopped", file=sys.stderr)
    return EXIT_OK


def _cmd_requirements(args: argparse.Namespace) -> int:
    from conformance.catalog import CAPABILITIES, catalog

    if args.capability and args.capability not in CAPABILITIES:
        raise UsageError(f"unknown capability {args.capability!r}: use one of {', '.join(CAPABILITIES)}")
    reqs = [
        r
        for r in catalog().values()
        if (not args.level or r.level == args.level.upper())
        and (not args.capability or r.capability == args.capability)
    ]
    if args.json:
        print(json.dumps([vars(r) for r in reqs], indent=1, ensure_ascii=False))
    else:
        for r in reqs:
            print(f"{r.id:40} {r.level:6} {r.capability:12} {r.statement}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from conformance.reports.commands import cmd_report

    return cmd_report(args.results, args.out)


def _cmd_diff(args: argparse.Namespace) -> int:
    from conformance.reports.commands import cmd_diff

    return cmd_diff(args.old, args.new)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
