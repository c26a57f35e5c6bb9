"""Speed and cost of the suite (issue 10): `python benchmarks/run.py` prints the figures and writes
benchmarks/results.json.

Every figure is measured within ONE invocation of this script and given as a ratio or a count, so that a
noisy machine (the reference one has 2 cores) moves the figures less than it moves absolute times:

1. wall time of the full default suite against the embedded reference server, serial and with ``-n 2``;
2. overhead: the suite's wall time over the time a bare httpx loop takes to replay exactly the requests of
   that run (from its results.json), against the same out-of-process reference server;
3. scaling against a latency-bound target (reference server with ``latency_s=0.2``): ``-n 8`` over ``-n 1``,
   and the same with ``--rate-limit 5``;
4. cost of a full default run and of a ``--level must`` run (requests, prompt and completion tokens);
5. detection efficiency: fault modes caught per 100 requests (see ``detection`` below for the definition);
and a cProfile of one serial run (the suite process only; the target runs in another process).

Options: ``--skip NAME`` (wall, overhead, scaling, cost, detection, profile; repeatable), ``--quick``
(detection on 1 fault mode in 5), ``--scaling-full`` (scaling on the whole suite: ~4 more minutes),
``--out FILE``. Bounded: under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


LATENCY_S = 0.2
# the capabilities of the scaling runs: ~60 short checks whose requests succeed, so each one waits for the
# injected latency (the reference server adds it to successful answers only; most requests of `errors` and
# of the generated checks are rejected at once). The full suite, four times over at 0.2 s a request, would not
# fit the 5-minute bound; --scaling-full runs it instead.
SCALING_SUBSET = [
    "streaming",
    "usage",
    "tools",
    "seed",
    "reasoning",
    "thinking",
    "json-object",
    "json-schema",
]
TMP = Path(tempfile.mkdtemp(prefix="conformance-bench-"))

_SERVER = """
import sys
from conformance.reference.server import start_in_thread
tps = float(sys.argv[4]) if sys.argv[4] != "none" else None
s = start_in_thread(api_key=sys.argv[1], latency_s=float(sys.argv[2]), ttft_s=float(sys.argv[3]), tps=tps)
print(s.base_url, s.model, flush=True)
sys.stdin.read()
"""
# the suite in a process that reports its CPU seconds (its own and its draw helper's) and peak memory (the
# target runs in another one)
_MEASURED = """
import json, os, resource, sys
from conformance.cli import main
try:
    code = main(sys.argv[1:])
finally:
    u = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)  # the draw helper (spec/DECISIONS.md#draw-ahead)
    with open(os.environ["BENCH_RUSAGE"], "w") as f:
        json.dump({"cpu_s": u.ru_utime + u.ru_stime + c.ru_utime + c.ru_stime,
                   "helper_cpu_s": c.ru_utime + c.ru_stime,
                   "peak_mib": u.ru_maxrss / 1024, "helper_peak_mib": c.ru_maxrss / 1024}, f)
sys.exit(code)
"""
# issue 15: a conformant server 1 s to the first token, 40 tokens/s (a mid-size model under load)
TTFT_S = 1.0
TPS = 40.0
LATENCY_CONCURRENCY = (1, 4, 16, 32, 64)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This checkout's package first (an editable install of another checkout must not be measured)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra or {})
    return env


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---- the target and the suite, each in its own process -----------------------------------------------------


@contextlib.contextmanager
def reference_server(
    latency_s: float = 0.0, ttft_s: float = 0.0, tps: float | None = None
) -> Iterator[dict[str, str]]:
    """A reference server in its own process (so it never shares a GIL with what is measured)."""
    key = secrets.token_urlsafe(16)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, key, str(latency_s), str(ttft_s), str(tps or "none")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        base_url, model = proc.stdout.readline().split()
        yield {"base_url": base_url, "model": model, "key": key}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def suite(
    name: str, *args: str, server: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``chat-conformance run ARGS`` in a fresh process; wall time and its results.json."""
    report = TMP / name
    rusage = TMP / f"{name}.rusage.json"
    cmd = [sys.executable, "-c", _MEASURED, "run", "--report-dir", str(report), *args]
    env = _env({"BENCH_RUSAGE": str(rusage)})
    if server is not None:
        cmd += ["--base-url", server["base_url"], "--model", server["model"]]
        env["CONFORMANCE_API_KEY"] = server["key"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    path = report / "results.json"
    if not path.exists():
        raise RuntimeError(f"{name}: no results.json (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    results = json.loads(path.read_text(encoding="utf-8"))
    usage = json.loads(rusage.read_text()) if rusage.exists() else {}
    return {
        "name": name,
        "args": list(args),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 3),
        "session_s": results["duration_s"],
        "cpu_s": round(usage.get("cpu_s", float("nan")), 2),
        "helper_cpu_s": round(usage.get("helper_cpu_s", float("nan")), 2),
        "peak_mib": round(usage.get("peak_mib", float("nan")), 1),
        "helper_peak_mib": round(usage.get("helper_peak_mib", float("nan")), 1),
        "results": results,
    }


def unique_exchanges(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The exchanges of a run, each once: a `shared` exchange appears in every check that judged it."""
    seen: dict[str, dict[str, Any]] = {}
    for check in results["checks"]:
        for ex in check["exchanges"]:
            seen.setdefault(json.dumps(ex, sort_keys=True), ex)
    return list(seen.values())


def cost_of(run: dict[str, Any]) -> dict[str, Any]:
    """The run's cost as results.json counts it (each exchange once, discovery probes included), and the
    number of distinct exchanges of its checks."""
    res = run["results"]
    c = res["cost"]
    return {
        "requests": c["requests"],
        "prompt_tokens": c["prompt_tokens"],
        "completion_tokens": c["completion_tokens"],
        "retries": c["retries"],
        "exchanges_unique": len(unique_exchanges(res)),
        "checks": len(res["checks"]),
    }


def bench_wall() -> dict[str, Any]:
    default = suite("wall-default")
    serial = suite("wall-serial", "--concurrency", "1")
    n2 = suite("wall-n2", "-n", "2", "--concurrency", "1")
    out = {
        "default_s": default["wall_s"],
        "default_session_s": default["session_s"],
        "serial_s": serial["wall_s"],
        "serial_session_s": serial["session_s"],
        "n2_s": n2["wall_s"],
        "n2_session_s": n2["session_s"],
        "default_over_serial": round(default["wall_s"] / serial["wall_s"], 2),
        "n2_over_serial": round(n2["wall_s"] / serial["wall_s"], 2),
        "exit_codes": [default["exit_code"], serial["exit_code"], n2["exit_code"]],
        "requests": [r["results"]["cost"]["requests"] for r in (default, serial, n2)],
    }
    _say(
        f"1. wall, full default suite, embedded server: default (--concurrency 32) {out['default_s']:.2f}s,"
        f" --concurrency 1 {out['serial_s']:.2f}s, -n 2 {out['n2_s']:.2f}s;"
        f" default / serial = {out['default_over_serial']:.2f}"
    )
    return {"figure": out, "_serial": serial}


# ---- 2. overhead: the suite vs a bare replay of its requests -----------------------------------------------


def replay(exchanges: list[dict[str, Any]], key: str) -> tuple[float, int]:
    """Send the recorded requests again with a bare httpx client; (seconds, failures)."""
    import httpx

    reqs = _bare_requests(exchanges, key)
    failures = 0
    with httpx.Client(timeout=60.0) as client:
        t0 = time.perf_counter()
        for req in reqs:
            failures += not _send_bare(client, req)
        elapsed = time.perf_counter() - t0
    return elapsed, failures


def bench_overhead() -> dict[str, Any]:
    with reference_server() as srv:
        run = suite("overhead-suite", server=srv)
        exchanges = unique_exchanges(run["results"])
        replay(exchanges[:5], srv["key"])  # warm the server and the imports
        t_replay, failures = replay(exchanges, srv["key"])
    n = len(exchanges)
    out = {
        "suite_wall_s": run["wall_s"],
        "suite_session_s": run["session_s"],
        "replay_s": round(t_replay, 3),
        "replayed_requests": n,
        "replay_failures": failures,
        "suite_over_replay": round(run["wall_s"] / t_replay, 2),
        "session_over_replay": round(run["session_s"] / t_replay, 2),
        "suite_ms_per_request": round(1000 * run["wall_s"] / n, 1),
        "replay_ms_per_request": round(1000 * t_replay / n, 2),
    }
    _say(
        f"2. overhead: suite {out['suite_wall_s']:.2f}s (pytest session {out['suite_session_s']:.2f}s)"
        " vs bare"
        f" replay of its {n} requests {out['replay_s']:.3f}s: suite/replay = {out['suite_over_replay']}"
        f" (session/replay = {out['session_over_replay']})"
    )
    return {"figure": out}


# ---- 6. a full run against a slow endpoint (issue 15) ---------------------------------------------------


def _bare_requests(exchanges: list[dict[str, Any]], key: str) -> list[tuple[str, str, dict[str, str], Any]]:
    """The recorded requests as (method, url, headers, body) for a bare httpx client; a masked credential
    becomes the real key, or a wrong one where the target refused it."""
    reqs = []
    for ex in exchanges:
        headers = {}
        for k, v in ex["request_headers"].items():
            if k.lower() in ("host", "content-length"):
                continue
            if "***" in v:
                v = v.replace("***", "wrong-" + key if ex.get("status") in (401, 403) else key)
            headers[k] = v
        body = ex["request_body"]
        reqs.append((ex["method"], ex["url"], headers, None if body is None else body.encode("utf-8")))
    return reqs


def _send_bare(client: Any, req: tuple[str, str, dict[str, str], Any]) -> bool:
    """Send one request and read its whole answer with a bare httpx client; False on a transport error."""
    import httpx

    method, url, headers, content = req
    try:
        with client.stream(method, url, headers=headers, content=content) as r:
            for _ in r.iter_bytes():
                pass
    except httpx.HTTPError:
        return False
    return True


def _chains(results: dict[str, Any]) -> list[list[list[dict[str, Any]]]]:
    """Each check's requests as a chain of steps (a step: requests that do not depend on each other). A
    check's requests depend on the ones before (its code reads each answer before it sends the next), except
    the generated phases' drawn requests, drawn before any is sent: one step."""
    chains = []
    for c in results["checks"]:
        steps: list[list[dict[str, Any]]] = []
        for ex in c["exchanges"]:
            if "generated" in c["nodeid"] and steps and ex["label"].startswith("generated"):
                steps[-1].append(ex)
            else:
                steps.append([ex])
        if steps:
            chains.append(steps)
    return chains


def floor(results: dict[str, Any], server: dict[str, str]) -> dict[str, Any]:
    """The floor: the run's requests replayed with bare httpx, every check's chain at once (unbounded
    requests in flight), after the two rounds of discovery probes: no engine can be faster than this."""
    import httpx

    from conformance.discovery import EFFECT_PROBES, PROBES

    model = server["model"]
    key = server["key"]
    base = server["base_url"]

    def probe(fields: dict[str, Any], max_tokens: int) -> dict[str, Any]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
                **fields}
        return {"method": "POST", "url": f"{base}/chat/completions", "request_body": json.dumps(body),
                "request_headers": {"Authorization": "Bearer ***", "Content-Type": "application/json"}}

    round1 = [probe(f, 4) for f in PROBES.values()] + [probe(next(iter(e.values())), 16)
                                                       for e in EFFECT_PROBES.values()]
    round2 = [probe({}, 16)] + [probe(f, 16) for e in EFFECT_PROBES.values() for f in list(e.values())[1:]]
    chains = _chains(results)
    failures = 0

    with httpx.Client(timeout=120.0, limits=httpx.Limits(max_connections=1000)) as client:

        def send(ex: dict[str, Any]) -> None:
            nonlocal failures
            failures += not _send_bare(client, _bare_requests([ex], key)[0])

        def step(pool: ThreadPoolExecutor, exs: list[dict[str, Any]]) -> None:
            list(pool.map(send, exs))

        def chain(steps: list[list[dict[str, Any]]]) -> None:
            with ThreadPoolExecutor(max_workers=max(len(s) for s in steps)) as inner:
                for s in steps:
                    step(inner, s)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(round1) + len(round2)) as pool:
            step(pool, round1)
            step(pool, round2)
        discovery = time.perf_counter() - t0
        with ThreadPoolExecutor(max_workers=len(chains)) as pool:
            list(pool.map(chain, chains))
        total = time.perf_counter() - t0
    longest = max(chains, key=lambda c: sum(max((e.get("elapsed") or 0) for e in s) for s in c))
    return {"floor_s": round(total, 3), "discovery_s": round(discovery, 3), "chains": len(chains),
            "longest_chain_steps": len(longest), "failures": failures}


def bench_latency(levels: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"ttft_s": TTFT_S, "tps": TPS, "runs": {}}
    with reference_server(ttft_s=TTFT_S, tps=TPS) as srv:
        runs = {c: suite(f"latency-c{c}", "--concurrency", str(c), server=srv) for c in levels}
        ref = runs[16] if 16 in runs else next(iter(runs.values()))
        fl = floor(ref["results"], srv)
    out["floor"] = fl
    for c, r in runs.items():
        out["runs"][str(c)] = {
            "wall_s": r["wall_s"],
            "wall_over_floor": round(r["wall_s"] / fl["floor_s"], 2),
            "requests": r["results"]["cost"]["requests"],
            "completion_tokens": r["results"]["cost"]["completion_tokens"],
            "cpu_s": r["cpu_s"],
            "helper_cpu_s": r["helper_cpu_s"],
            "peak_mib": r["peak_mib"],
            "helper_peak_mib": r["helper_peak_mib"],
            "exit_code": r["exit_code"],
            "verdict": r["results"]["verdict"],
        }
        _say(
            f"6. latency {TTFT_S:g} s + {TPS:g} tokens/s, --concurrency {c}: wall {r['wall_s']:.1f}s, "
            f"wall/floor {r['wall_s'] / fl['floor_s']:.2f}, {r['results']['cost']['requests']} requests, "
            f"CPU {r['cpu_s']:.1f}s (of which the draw helper {r['helper_cpu_s']:.1f}s), "
            f"peak {r['peak_mib']:.0f} MiB (helper {r['helper_peak_mib']:.0f} MiB)"
        )
    _say(f"   floor (bare httpx, every chain at once): {fl['floor_s']:.1f}s ({fl['chains']} chains, "
         f"discovery {fl['discovery_s']:.1f}s)")
    return {"figure": out}


# ---- 3. scaling against a latency-bound target


def bench_scaling(subset: list[str]) -> dict[str, Any]:
    only = [a for cap in subset for a in ("--only", cap)]
    out: dict[str, Any] = {"latency_s": LATENCY_S, "subset": subset or "full default suite"}
    with reference_server(LATENCY_S) as srv:
        runs = {}
        for label, extra in (
            ("n1", ["-n", "1"]),
            ("n8", ["-n", "8"]),
            ("n1_rl5", ["-n", "1", "--rate-limit", "5"]),
            ("n8_rl5", ["-n", "8", "--rate-limit", "5"]),
        ):
            runs[label] = suite(f"scaling-{label}", *only, *extra, server=srv)
    for label, r in runs.items():
        out[f"{label}_s"] = r["wall_s"]
        out[f"{label}_session_s"] = r["session_s"]
        out[f"{label}_requests"] = r["results"]["cost"]["requests"]
    out["speedup_n8"] = round(runs["n1"]["wall_s"] / runs["n8"]["wall_s"], 2)
    out["speedup_n8_session"] = round(runs["n1"]["session_s"] / runs["n8"]["session_s"], 2)
    # the best a run can do: its requests, one after the other, split evenly over 8 workers
    out["ideal_n8_s"] = round(out["n8_requests"] * LATENCY_S / 8, 1)
    out["speedup_n8_rl5"] = round(runs["n1_rl5"]["wall_s"] / runs["n8_rl5"]["wall_s"], 2)
    # a run at 5 requests/s cannot take less than requests/5 seconds
    out["n8_rl5_floor_s"] = round(out["n8_rl5_requests"] / 5, 1)
    _say(
        f"3. scaling, latency {LATENCY_S}s ({out['subset']}): -n 1 {out['n1_s']:.1f}s,"
        f" -n 8 {out['n8_s']:.1f}s:"
        f" speedup {out['speedup_n8']} (pytest session {out['speedup_n8_session']}); with --rate-limit 5:"
        f" -n 1 {out['n1_rl5_s']:.1f}s, -n 8 {out['n8_rl5_s']:.1f}s: speedup {out['speedup_n8_rl5']}"
        f" (floor {out['n8_rl5_floor_s']}s = {out['n8_rl5_requests']} requests / 5 rps)"
    )
    _say(
        f"   {out['n1_requests']} requests at -n 1, {out['n8_requests']} at -n 8 (ideal -n 8:"
        f" {out['ideal_n8_s']}s)"
    )
    return {"figure": out}


# ---- 4. cost -----------------------------------------------------------------------------------------------


def bench_cost(serial: dict[str, Any] | None) -> dict[str, Any]:
    full = serial or suite("cost-full")
    must = suite("cost-must", "--level", "must")
    out = {"full": cost_of(full), "must": cost_of(must)}
    for k in ("full", "must"):
        c = out[k]
        _say(
            f"4. cost, {k}: {c['requests']} requests (cost.requests;"
            f" {c['exchanges_unique']} distinct exchanges of the checks + the discovery probes),"
            f" {c['prompt_tokens']} prompt +"
            f" {c['completion_tokens']} completion tokens"
        )
    return {"figure": out}


# ---- 5. detection efficiency -------------------------------------------------------------------------------


_KILL_WORKER = """
import contextlib, io, json, sys
from conformance.catalog import catalog
from conformance.cli import main
from conformance.reference.faults import FAULTS
out = []
for name in sys.argv[3:]:
    f = FAULTS[name]
    req = catalog()[f.requirement]
    profile = "seed" if req.applies_to("seed") else "openai"
    scope = req.id if sys.argv[2] == "requirement" else req.capability
    args = ["run", "--report-dir", sys.argv[1] + "/" + name, "--fault", name, "--only", scope,
            "--profile", profile]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    res = json.load(open(sys.argv[1] + "/" + name + "/results.json", encoding="utf-8"))
    caught = [k for k, v in res["requirements"].items() if v["verdict"] in ("fail", "informational", "error")]
    out.append({"fault": name, "requirement": f.requirement, "capability": req.capability,
                "profile": profile, "exit_code": code, "caught": f.requirement in caught,
                "failing": caught, "requests": res["cost"]["requests"],
                "cost_requests": res["cost"]["requests"]})
print(json.dumps(out))
"""


def bench_detection(full_cost: dict[str, Any] | None, quick: bool, scope: str) -> dict[str, Any]:
    """For each fault mode F: one run of the suite with --fault F, restricted (--only) to the requirement F
    breaks (``--detection-scope capability``: to that requirement's capability). F is caught when that
    requirement is failed (informational for a MAY). Requests are counted through the run's budget (what the
    target received, discovery probes included, the preflight excluded). Two figures:

    - scoped: caught faults per 100 requests of those restricted runs (what detecting each fault on its own
      costs);
    - full run: a full default run holds every one of those checks, so it catches the same faults in one go:
      caught faults per 100 requests of ONE full default run (the run of figure 1; each fault enabled
      alone)."""
    from conformance.reference.faults import FAULTS

    names = sorted(FAULTS)
    if quick:
        names = names[::5]
    halves = [names[0::2], names[1::2]]  # two worker processes: the figure is a count, not a time
    base = TMP / "detection"
    base.mkdir(parents=True, exist_ok=True)

    def work(chunk: list[str]) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, "-c", _KILL_WORKER, str(base), scope, *chunk],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"detection worker failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        rows = [r for part in pool.map(work, halves) for r in part]
    elapsed = time.perf_counter() - t0
    caught = [r for r in rows if r["caught"]]
    requests = sum(r["requests"] for r in rows)
    out: dict[str, Any] = {
        "faults": len(rows),
        "caught": len(caught),
        "missed": [r["fault"] for r in rows if not r["caught"]],
        "scope": scope,
        "scoped_requests": requests,
        "caught_per_100_requests_scoped": round(100 * len(caught) / requests, 1),
        "mean_requests_per_fault_scoped": round(requests / len(rows), 1),
        "elapsed_s": round(elapsed, 1),
        "rows": rows,
    }
    if full_cost:
        full_requests = full_cost["exchanges_unique"]
        out["full_run_requests"] = full_requests
        out["caught_per_100_requests_full_run"] = round(100 * len(caught) / full_requests, 1)
    _say(
        f"5. detection: {len(caught)}/{len(rows)} fault modes caught; {scope}-scoped runs:"
        f" {out['caught_per_100_requests_scoped']} caught per 100 requests ({requests} requests);"
        + (
            f" one full default run ({out['full_run_requests']} requests):"
            f" {out['caught_per_100_requests_full_run']} faults per 100 requests"
            if full_cost
            else ""
        )
    )
    return {"figure": out}


# ---- profile -----------------------------------------------------------------------------------------------

# (label, substring of "file:function" in pstats) whose cumulative time is reported
_PROFILE_BUCKETS = [
    ("total (cli main, imports of conformance.cli excluded)", "conformance/cli.py:main"),
    ("imports (all, cumulative)", "<frozen importlib._bootstrap>:_find_and_load"),
    ("pytest startup: config/plugins", "_pytest/config/__init__.py:_prepareconfig"),
    ("collection", "_pytest/main.py:pytest_collection"),
    ("preflight request", "conformance/cli.py:_preflight"),
    ("discovery probes", "conformance/discovery.py:discover"),
    ("test loop", "_pytest/main.py:pytest_runtestloop"),
    ("HTTP exchanges (client._attempt, incl. network wait)", "conformance/client.py:_attempt"),
    ("JSON Schema validation (schema_errors)", "conformance/schemas.py:schema_errors"),
    ("JSON Schema validator build (validator)", "conformance/schemas.py:validator"),
    ("openapi.yaml load", "conformance/specfiles.py:openapi"),
    ("catalog load", "conformance/catalog.py:catalog"),
    ("record building (makereport, to_dict)", "conformance/plugin.py:pytest_runtest_makereport"),
    ("budget acquire (flock, state file)", "conformance/budget.py:acquire"),
    ("budget add_tokens", "conformance/budget.py:add_tokens"),
    ("sessionfinish: results + reports", "conformance/plugin.py:pytest_sessionfinish"),
    ("  report.html", "conformance/reports/html.py:write_html"),
    ("  results.json/junit/summary", "conformance/results.py:write_all"),
]


def bench_profile() -> dict[str, Any]:
    """cProfile of one serial run in a fresh process (imports included), against an out-of-process server."""
    pfile = TMP / "suite.prof"
    with reference_server() as srv:
        cmd = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(pfile),
            "-m",
            "conformance.cli",
            "run",
            "--report-dir",
            str(TMP / "profile"),
            "--base-url",
            srv["base_url"],
            "--model",
            srv["model"],
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=_env({"CONFORMANCE_API_KEY": srv["key"]}), capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
    code = proc.returncode
    stats = pstats.Stats(str(pfile))
    raw = stats.stats  # type: ignore[attr-defined]
    buckets = []
    for label, needle in _PROFILE_BUCKETS:
        cum = 0.0
        calls = 0
        for (fname, _line, func), (_cc, nc, _tt, ct, _callers) in raw.items():
            if f"{fname}:{func}".endswith(needle) or (
                needle.startswith("<") and fname == needle.split(":")[0] and func == needle.split(":")[1]
            ):
                # recursive functions (imports) count once: take the max over the entries, not the sum
                cum = max(cum, ct) if needle.startswith("<") else cum + ct
                calls += nc
        buckets.append({"what": label, "cum_s": round(cum, 3), "calls": calls})
    top_tottime = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top = [
        {"where": f"{Path(f).name}:{line}:{fn}", "tottime_s": round(v[2], 3), "calls": v[1]}
        for (f, line, fn), v in top_tottime
    ]
    out = {"wall_s": round(wall, 3), "exit_code": code, "buckets": buckets, "top_tottime": top}
    _say(f"profile of one serial run ({wall:.2f}s in this process, profiler on; cumulative seconds):")
    for b in buckets:
        _say(f"   {b['cum_s']:7.3f}s  {b['calls']:6d} calls  {b['what']}")
    _say("   top self time:")
    for t in top[:10]:
        _say(f"   {t['tottime_s']:7.3f}s  {t['calls']:6d} calls  {t['where']}")
    return {"figure": out}


# ---- main --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # no .pyc cache: every process compiles (and pytest re-rewrites) every module it imports
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def _git() -> tuple[str, bool]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "conformance", "spec"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
    except OSError:
        return "", False
    return commit.strip(), bool(dirty.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None, allow_abbrev=False)
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("wall", "overhead", "scaling", "cost", "detection", "profile", "latency"),
    )
    ap.add_argument(
        "--latency-concurrency",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="the --concurrency levels of the latency runs (default 1, 4, 16, 32, 64; 1 takes minutes)",
    )
    ap.add_argument("--quick", action="store_true", help="detection on 1 fault mode in 5")
    ap.add_argument(
        "--scaling-only",
        action="append",
        default=[],
        metavar="CAPABILITY",
        help="the capabilities of the scaling runs (default: " + ", ".join(SCALING_SUBSET) + ")",
    )
    ap.add_argument(
        "--detection-scope",
        choices=("requirement", "capability"),
        default="requirement",
        help="restrict each fault's run to the requirement it breaks (default) or to its capability (slower)",
    )
    ap.add_argument("--scaling-full", action="store_true", help="scaling runs on the full default suite")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = ap.parse_args(argv)
    started = time.perf_counter()
    m = machine()
    m["commit"], m["dirty"] = _git()
    _say(f"machine: {m['nproc']} CPU(s), {m['cpu']}, Python {m['python']}")
    figures: dict[str, Any] = {}
    serial = None
    if "wall" not in args.skip:
        w = bench_wall()
        figures["wall"], serial = w["figure"], w["_serial"]
    if "overhead" not in args.skip:
        figures["overhead"] = bench_overhead()["figure"]
    if "scaling" not in args.skip:
        subset = [] if args.scaling_full else (args.scaling_only or SCALING_SUBSET)
        figures["scaling"] = bench_scaling(subset)["figure"]
    if "cost" not in args.skip:
        figures["cost"] = bench_cost(serial)["figure"]
    if "detection" not in args.skip:
        full = figures.get("cost", {}).get("full")
        figures["detection"] = bench_detection(full, args.quick, args.detection_scope)["figure"]
    if "profile" not in args.skip:
        figures["profile"] = bench_profile()["figure"]
    if "latency" not in args.skip:
        figures["latency"] = bench_latency(tuple(args.latency_concurrency) or LATENCY_CONCURRENCY)["figure"]
    total = time.perf_counter() - started
    _say(f"total {total:.0f}s; wrote {args.out}")
    # a run of some benchmarks (--skip) keeps the others' figures, each marked with the commit and machine it
    # was measured on (a subset run overwrote the whole file), and any other key (the mutation score)
    out = Path(args.out)
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    old = data.get("figures") if isinstance(data.get("figures"), dict) else {}
    for fig in old.values():
        if isinstance(fig, dict):
            fig.setdefault("measured_on", data.get("machine"))
    measured = {name: {**fig, "measured_on": m} if isinstance(fig, dict) else fig
                for name, fig in figures.items()}
    data.update({"machine": m, "total_s": round(total, 1), "figures": {**old, **measured}})
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
