"""The ``chat-conformance`` command: run, serve, requirements, report.

Exit codes: 0 conformant, 1 not conformant, 2 usage error, 3 target unreachable or credentials refused
before any check ran, 4 internal error of the suite. A fleet (``--model`` repeated, ``--fleet``) exits with
the worst of its models' codes: 2 > 4 > 3 > 1 > 0 (:data:`conformance.fleet.EXIT_SEVERITY`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from conformance.errors import UsageError

if TYPE_CHECKING:
    from conformance.fleet import FleetTarget

__all__ = ["main", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_INTERNAL"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4
CHECKS_DIR = Path(__file__).resolve().parent / "checks"
SERVE_KEY_ENV = "CONFORMANCE_SERVE_API_KEY"


_MIN_CONTEXT = 32  # the reference server's default answer (about 60 tokens) needs room beside the prompt


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, names the fix
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="chat-conformance", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser(
        "run", help="run the suite against a target (the embedded reference server by default)"
    )
    r.add_argument(
        "--base-url",
        help="target base URL ending before /chat/completions; omitted: start the embedded reference server",
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
        "(worst first: 2 usage > 4 internal > 3 unreachable > 1 not conformant > 0)",
    )
    r.add_argument(
        "--api-key-env",
        default="CONFORMANCE_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key",
    )
    r.add_argument(
        "--profile", default="seed", metavar="NAME|FILE", help="seed (default), openai, or a .toml"
    )
    r.add_argument(
        "--report-dir", default="reports", metavar="DIR", help="where reports go (default reports/)"
    )
    r.add_argument("--expectations", metavar="FILE", help="TOML file of waived requirement ids")
    r.add_argument("--strict-waivers", action="store_true", help="a waived requirement that passes fails")
    r.add_argument("--level", choices=("must", "should", "may"), default="may", help="run up to this level")
    r.add_argument(
        "--fail-on",
        choices=("must", "should", "may"),
        default="must",
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
        default=32,
        metavar="N",
        help="requests in flight at once from one process (default 32; 1 sends one request at a time)",
    )
    r.add_argument(
        "-n", "--workers", default="0", metavar="N",
        help="parallel worker processes (pytest-xdist), or auto; not needed: --concurrency is faster",
    )
    r.add_argument("--max-requests", type=int, metavar="N", help="request budget")
    r.add_argument("--max-tokens-total", type=int, metavar="N", help="token budget")
    r.add_argument(
        "--rate-limit", type=float, metavar="RPS", help="requests per second, all workers together"
    )
    r.add_argument("--timeout", type=float, default=60.0, metavar="S", help="deadline of one exchange")
    r.add_argument(
        "--idle-timeout", type=float, default=20.0, metavar="S", help="longest silence in a response"
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
        "--examples", type=int, metavar="N", help="property-based checks: generated examples (default 15)"
    )
    r.add_argument(
        "--hypothesis-seed", type=int, metavar="N", help="property-based checks: hypothesis seed (default 0)"
    )
    r.add_argument(
        "--record", metavar="FILE.har", help="write every exchange to FILE.har (HAR 1.2, key masked)"
    )
    r.add_argument("-v", "--verbose", action="count", default=0, help="more pytest output")

    rp = sub.add_parser(
        "replay",
        help="re-run the suite against a recording (`run --record`) instead of the network",
        description="Re-run the suite against a HAR recording written by `run --record`: no request leaves "
        "the machine; a request the recording lacks makes its check inconclusive (not recorded).",
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
        print(f"chat-conformance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chat-conformance: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the suite itself crashed: say so, never blame the target
        import traceback

        traceback.print_exc()
        print(f"chat-conformance: internal error ({type(exc).__name__}): please report this", file=sys.stderr)
        return EXIT_INTERNAL


# ---- run ---------------------------------------------------------------------------------------------------


def _validate_run(args: argparse.Namespace) -> None:
    from conformance.catalog import check_selection
    from conformance.profiles import load_profile

    load_profile(args.profile)
    check_selection(args.only, args.require)
    if args.expectations:
        from conformance.expectations import load_expectations

        load_expectations(args.expectations)
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
        if args.api_key_env != "CONFORMANCE_API_KEY" and not os.environ.get(args.api_key_env):
            raise UsageError(
                f"environment variable {args.api_key_env} is not set: export it with the API key"
            )
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
    if not 1 <= args.concurrency <= 256:
        raise UsageError(
            f"--concurrency {args.concurrency} is out of range: give 1 to 256 requests in flight (default 32)"
        )
    _check_latency(args)


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


def _preflight(base_url: str, model: str, api_key: str | None, verify: bool | str, timeout: float) -> None:
    """Fail fast (exit 3) when the target cannot be reached, refuses our key, answers only gateway errors
    (502/503/504) or rate-limits us beyond the retries, before any check. The request goes through the
    recording client, so it is bounded like every other: total deadline ``timeout`` (headers included),
    byte cap, no redirect followed, the key scrubbed from every message."""
    from conformance.client import Client, retry_after_seconds
    from conformance.errors import TargetUnreachable
    from conformance.target import Limits, Target

    target = Target(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key=api_key,
        verify_tls=verify,
        limits=Limits(connect_timeout=min(5.0, timeout), idle_timeout=timeout, total_timeout=timeout),
    )
    with Client(target) as c:
        ex = c.chat(
            {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
            label="preflight",
        )
    if ex.status is None:
        raise TargetUnreachable(f"target {base_url} unreachable: {(ex.transport_error or 'no answer')[:200]}")
    if ex.status in (401, 403):
        raise TargetUnreachable(
            f"target {base_url} refused the credentials (HTTP {ex.status}): "
            "check the key in the API key variable"
        )
    if ex.status in (502, 503, 504):
        raise TargetUnreachable(
            f"target {base_url} answered HTTP {ex.status} (a gateway error: the service behind it is down "
            "or overloaded)"
        )
    if ex.status == 429:
        retry = None
        for k, v in ex.response_headers.items():
            if k.lower() == "retry-after":
                retry = retry_after_seconds(v)
        raise TargetUnreachable(
            f"target {base_url} rate-limited the first request (HTTP 429 after {ex.retries} retries"
            + (f", Retry-After {retry:.0f} s" if retry is not None else "")
            + "): nothing can be judged; retry later or raise the target's limits"
        )


def _preflight_while_loading(
    base_url: str, model: str, api_key: str | None, verify: bool | str, timeout: float
) -> None:
    """``_preflight``, while this thread imports what the run will import anyway (the checks' helpers,
    hypothesis, the results): against a slow target the first answer takes a second, the imports as long."""
    import threading

    failure: list[BaseException] = []

    def send() -> None:
        try:
            _preflight(base_url, model, api_key, verify, timeout)
        except BaseException as exc:  # noqa: BLE001  # raised again in the caller's thread
            failure.append(exc)

    sender = threading.Thread(target=send, name="conformance-preflight", daemon=True)
    sender.start()
    # not conformance.plugin: pytest rewrites its asserts when it loads it (importing it first would warn)
    import conformance.checks._generated  # noqa: F401
    import conformance.checks._support  # noqa: F401
    import conformance.results  # noqa: F401

    sender.join()
    if failure:
        raise failure[0]


def _cmd_run(args: argparse.Namespace) -> int:
    import pytest

    from conformance.errors import TargetUnreachable

    _validate_run(args)
    server = None
    env_key = args.api_key_env
    base_url, model = args.base_url, args.model
    replay = getattr(args, "replay", None)
    if not base_url and not replay:
        from conformance.profiles import load_profile
        from conformance.reference.server import start_in_thread

        key = secrets.token_urlsafe(16)
        os.environ[env_key] = key
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
            f"chat-conformance: embedded reference server at {base_url}"
            + (f" with faults {', '.join(args.fault)}" if args.fault else "")
            + (f" with variants {', '.join(args.variant)}" if args.variant else ""),
            file=sys.stderr,
        )
    try:
        verify: bool | str = False if args.insecure else (args.ca_bundle or True)
        try:
            if not replay:
                key_value = os.environ.get(env_key) or None
                _preflight_while_loading(base_url, model, key_value, verify, args.timeout)
        except TargetUnreachable as exc:
            print(f"chat-conformance: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        pargs = [
            str(CHECKS_DIR),
            "-c",
            str(CHECKS_DIR / "pytest.ini"),
            "--rootdir",
            str(CHECKS_DIR),
            "-p",
            "no:cacheprovider",
            "-q" if not args.verbose else "-" + "v" * args.verbose,
            "--conformance-base-url",
            base_url,
            "--conformance-model",
            model,
            "--conformance-api-key-env",
            env_key,
            "--conformance-profile",
            args.profile,
            "--conformance-level",
            args.level,
            "--conformance-fail-on",
            args.fail_on,
            "--conformance-report-dir",
            args.report_dir,
            "--conformance-timeout",
            str(args.timeout),
            "--conformance-idle-timeout",
            str(args.idle_timeout),
        ]
        for flag, values in (
            ("--conformance-only", args.only),
            ("--conformance-require", args.require),
            ("--conformance-header", args.header),
        ):
            for v in values:
                pargs += [flag, v]
        for flag, value in (
            ("--conformance-expectations", args.expectations),
            ("--conformance-max-requests", args.max_requests),
            ("--conformance-max-tokens-total", args.max_tokens_total),
            ("--conformance-rate-limit", args.rate_limit),
            ("--conformance-ca-bundle", args.ca_bundle),
            ("--conformance-examples", args.examples),
            ("--conformance-hypothesis-seed", args.hypothesis_seed),
            ("--conformance-record", args.record),
            ("--conformance-replay", replay),
            ("--conformance-concurrency", args.concurrency),
        ):
            if value is not None:
                pargs += [flag, str(value)]
        for flag, on in (
            ("--conformance-strict-waivers", args.strict_waivers),
            ("--conformance-insecure", args.insecure),
            ("--conformance-skip-discovery", args.skip_discovery),
        ):
            if on:
                pargs.append(flag)
        if args.workers != "0":
            pargs += ["-p", "xdist.plugin", "-n", args.workers]
        grab = _Grab()
        # only the plugins the suite needs: autoloading every installed pytest plugin (hypothesis,
        # schemathesis, anyio, ...) doubles the start-up time of a run, in every xdist worker too
        saved = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        try:
            code = pytest.main([*pargs, "-p", "conformance.plugin"], plugins=[grab])
        finally:
            if saved is None:
                os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
            else:
                os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = saved
        results = grab.results()
        if results is None:
            if code == pytest.ExitCode.USAGE_ERROR:
                return EXIT_USAGE
            if code == pytest.ExitCode.INTERRUPTED:
                return EXIT_FAIL
            print(
                "chat-conformance: internal error: the run produced no results (pytest exit code "
                f"{int(code)}): please report this",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        return int(results["exit_code"])
    finally:
        if server is not None:
            server.stop()


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
                 "verbose"):
        setattr(run, name, getattr(args, name))
    run.profile = args.profile or info.get("profile") or "seed"
    run.base_url, run.model = info["base_url"], info["model"]
    run.examples, run.hypothesis_seed = info.get("examples"), info.get("hypothesis_seed")
    run.replay = args.recording
    if info.get("auth", True):  # the checks that need a key see one; it is sent nowhere
        os.environ[REPLAY_KEY_ENV] = "replay-placeholder-key"
        run.api_key_env = REPLAY_KEY_ENV
    print(f"chat-conformance: replaying {args.recording} (model {run.model} at {run.base_url}); "
          "no request leaves this machine", file=sys.stderr)
    return _cmd_run(run)


class _Grab:
    """In-process pytest plugin that hands the run's results back to the CLI."""

    def __init__(self) -> None:
        self.config: Any = None

    def pytest_configure(self, config: Any) -> None:
        self.config = config

    def results(self) -> dict[str, Any] | None:
        from conformance.plugin import _state

        if self.config is None or _state not in self.config.stash:
            return None
        return self.config.stash[_state].get("results")


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
    # the second run in this process finds the plugin imported already: pytest's warning about it is noise
    saved = os.environ.get("PYTEST_ADDOPTS")
    os.environ["PYTEST_ADDOPTS"] = f"{saved or ''} -W ignore::pytest.PytestAssertRewriteWarning".strip()
    try:
        _run_fleet(targets, runs, codes, results_list)
    finally:
        if saved is None:
            os.environ.pop("PYTEST_ADDOPTS", None)
        else:
            os.environ["PYTEST_ADDOPTS"] = saved
    from conformance.reports.matrix import matrix_markdown, write_matrix

    root.mkdir(parents=True, exist_ok=True)
    html = write_matrix(results_list, root)
    md = root / "matrix.md"
    md.write_text(matrix_markdown(results_list), encoding="utf-8")
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
    """Run each target in turn; append its exit code and its matrix column."""
    for i, (t, ns) in enumerate(zip(targets, runs, strict=True), 1):
        print(f"chat-conformance: [{i}/{len(runs)}] {t.label()} -> {ns.report_dir}/", file=sys.stderr)
        fresh = Path(ns.report_dir) / "results.json"
        fresh.unlink(missing_ok=True)  # an earlier run's results must never stand for this one
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
            raise UsageError(
                f"environment variable {args.api_key_env} is not set: export it with the key to require"
            )
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
