"""Mutation testing of the reference model (issue 24): how many servers that deviate where nobody chose does
one default run of the suite catch?

    pip install 'mutmut>=3.8,<4'                    # or: pip install -e '.[mutation]'
    nice -n 10 python benchmarks/mutation.py          # every mutant of conformance/reference/model.py
    python benchmarks/mutation.py --sample 20         # a deterministic sample (CI-sized)
    python benchmarks/mutation.py --list              # the mutants only, nothing run

The mutants are mutmut's (its operators and its names, e.g. ``xǁDecoderǁ_choose__mutmut_12``), generated
from a private snapshot of the repository (``git archive HEAD``; ``--working-tree`` copies the working tree
instead), never in the checkout: nothing here writes a file of the repository except ``--out``.

mutmut's own runner is not used: it trampolines functions inside ONE imported module, so what the model
computes at import time (the vocabulary, the base logits of ``MODEL = TinyModel()``) and what its caches keep
(``_boosts``' lru_cache) would hide mutants. Instead this script imports the suite once, runs it once against
the unmutated reference server (the baseline, traced: which lines of model.py a default run executes), then
for each mutant forks, drops ``conformance.reference*`` from ``sys.modules``, executes the mutated model.py
as ``conformance.reference.model`` and runs ``chat-conformance run --report-dir DIR --progress off`` in the
child (a warm run: about 2 s of CPU). A control child with the unmutated source must agree with the baseline
first. One child at a time.

A mutant is **killed** when the run's exit code is not 0 (the gate at the default ``--fail-on must``, an
incomplete run, a crash of the server or of the run) or any requirement of any level has the verdict
``fail`` (the default run judges every level: a SHOULD failure is reported, gate or not); a child that
runs past ``--timeout`` is killed too (counted apart as ``timed_out``). Otherwise it **survived**; a survivor
is classified by ``benchmarks/mutation_equivalents.toml`` (``equivalent``: no change observable from
outside, with the reason; ``blind-spot``: the requirement that should catch it and the request that would
show it). score = killed / (total - equivalent).

Writes the figure under the key ``mutation`` of ``--out`` (default benchmarks/results.json for a full run;
a ``--sample`` or ``--only`` run writes nothing unless ``--out`` is given), and with ``--details FILE`` every
mutant's record (diff, verdicts that changed, requests, time).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL_REL = "conformance/reference/model.py"
MODULE = "conformance.reference.model"
TABLE = ROOT / "benchmarks" / "mutation_equivalents.toml"
# equivalent: no request can tell it from the model (dead code, an unreachable branch, a no-op);
# conformant: an observable change that stays inside the contract (another model: other words, other
#   probabilities), which no oracle of a contract may kill;
# blind-spot: a deviation from the contract that the suite misses (the requirement, the request that shows it)
CLASSES = ("equivalent", "conformant", "blind-spot")
# what --reclassify keeps of a run (the rest is recomputed from its records and the table)
RUN_FIELDS = (
    "baseline",
    "control",
    "wall_s",
    "cpu_s_children",
    "cpu_s_driver",
    "requests",
    "tool",
    "commit",
    "command",
    "kill_rule",
    "mutants_generated",
)


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---- the mutants -------------------------------------------------------------------------------------------


@dataclass
class Mutant:
    name: str  # mutmut's: {module}.{mangled function}__mutmut_{n}
    id: str  # stable across unrelated edits: "Class.function: old -> new" (the changed lines, stripped)
    function: str
    line: int  # first changed line of model.py as it is in the snapshot
    lines: list[int]
    diff: str
    source: str = field(repr=False)


def _mutmut_config(workdir: Path) -> None:
    """mutmut reads its configuration from the current folder: give it one naming the model, then leave."""
    (workdir / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["model.py"]\n', encoding="utf-8")


def generate(source: str) -> list[Mutant]:
    """Every mutant mutmut makes of ``source`` (model.py), each as a whole mutated file."""
    try:
        import libcst as cst
        from mutmut.mutation.file_mutation import create_mutations
        from mutmut.mutation.trampoline_templates import mangle_function_name
    except ImportError as exc:  # pragma: no cover - an optional tool
        raise SystemExit(f"mutation.py needs mutmut 3 (pip install 'mutmut>=3.8,<4'): {exc}") from exc
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mutmut-cfg-") as cfg:
        _mutmut_config(Path(cfg))
        os.chdir(cfg)
        try:
            module, mutations, _, _ = create_mutations("model.py", source)
        finally:
            os.chdir(here)
    # the functions (and methods of top-level classes) mutmut gives trampolines: the mutants its runner runs
    owners: dict[int, tuple[str | None, Any]] = {}
    for stmt in module.body:
        if isinstance(stmt, cst.FunctionDef):
            owners[id(stmt)] = (None, stmt)
        elif isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock):
            for item in stmt.body.body:
                if isinstance(item, cst.FunctionDef):
                    owners[id(item)] = (stmt.name.value, item)
    original = source.splitlines(keepends=True)
    counters: dict[int, int] = {}
    seen: dict[str, int] = {}
    out: list[Mutant] = []
    for m in mutations:
        owner = owners.get(id(m.contained_by_top_level_function))
        if owner is None:
            continue  # a class-body statement: mutmut makes it but never runs it
        cls, func = owner
        counters[id(func)] = counters.get(id(func), 0) + 1
        mangled = mangle_function_name(name=func.name.value, class_name=cls)
        name = f"{MODULE}.{mangled}__mutmut_{counters[id(func)]}"
        mutated = module.deep_replace(m.original_node, m.mutated_node).code
        changed = mutated.splitlines(keepends=True)
        old, new, lines = [], [], []
        sm = difflib.SequenceMatcher(a=original, b=changed, autojunk=False)
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            if tag == "equal":
                continue
            old += [s.strip() for s in original[i1:i2]]
            new += [s.strip() for s in changed[j1:j2]]
            lines += list(range(i1 + 1, max(i2, i1 + 1) + 1))
        qual = f"{cls}.{func.name.value}" if cls else func.name.value
        mid = f"{qual}: {' | '.join(old)} -> {' | '.join(new)}"
        seen[mid] = seen.get(mid, 0) + 1
        if seen[mid] > 1:  # the same text change at another place of the same line(s)
            mid += f" #{seen[mid]}"
        diff = "".join(
            difflib.unified_diff(original, changed, fromfile="model.py", tofile="model.py (mutant)", n=0)
        )
        out.append(Mutant(name, mid, qual, lines[0] if lines else 0, lines, diff, mutated))
    return out


def sample(mutants: list[Mutant], n: int, seed: int) -> list[Mutant]:
    """A deterministic sample of ``n`` mutants (the same for the same model.py and seed), in file order."""
    if n >= len(mutants):
        return mutants
    chosen = set(random.Random(seed).sample(sorted(m.id for m in mutants), n))
    return [m for m in mutants if m.id in chosen]


# ---- the classification table ------------------------------------------------------------------------------


def load_table(path: Path = TABLE) -> dict[str, dict[str, Any]]:
    """``[[mutant]]`` entries of the table by id; each has ``class`` (equivalent, blind-spot) and ``reason``;
    a blind spot also names its ``requirement`` and the ``request`` that would show it."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for entry in data.get("mutant", []):
        if entry.get("class") not in CLASSES or not str(entry.get("reason", "")).strip():
            raise SystemExit(f"{path}: an entry needs class ({', '.join(CLASSES)}) and a reason: {entry}")
        if entry["id"] in out:
            raise SystemExit(f"{path}: {entry['id']!r} is classified twice")
        out[entry["id"]] = entry
    return out


# ---- the snapshot and the runs -----------------------------------------------------------------------------


def snapshot(working_tree: bool) -> tuple[Path, str]:
    """A private copy of the package and its contract (conformance/, spec/), outside the checkout."""
    dest = Path(tempfile.mkdtemp(prefix="conformance-mutation-"))
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if working_tree:
        for part in ("conformance", "spec"):
            shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return dest, commit + "+working-tree"
    tar = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "conformance", "spec"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return dest, commit


def _statement_lines(source: str) -> dict[int, int]:
    """Each line of ``source`` -> the first line of the innermost statement holding it (what a line trace
    reports for a statement that spans several lines)."""
    out: dict[int, int] = {}
    spans = sorted(
        (
            (n.lineno, n.end_lineno or n.lineno)
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.stmt)
        ),
        key=lambda s: s[1] - s[0],
        reverse=True,
    )
    for start, end in spans:  # widest first: inner statements overwrite
        for line in range(start, end + 1):
            out[line] = start
    return out


@contextlib.contextmanager
def traced(filename: str, lines: set[int]):
    """Record the lines of ``filename`` executed in any thread started meanwhile (a minimal line coverage)."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            lines.add(frame.f_lineno)
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == filename:
            lines.add(frame.f_lineno)
            return local
        return None

    threading.settrace(tracer)
    sys.settrace(tracer)
    try:
        yield lines
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]


def run_args(report: Path, max_duration: float) -> list[str]:
    return ["run", "--report-dir", str(report), "--progress", "off", "--max-duration", str(max_duration)]


_VOLATILE = {"id", "created", "system_fingerprint", "t", "xid", "sent_at", "ttfb", "elapsed", "date"}


def _stable(value: Any) -> Any:
    """An answer without what changes from run to run (ids, timestamps, timings)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def answers(res: dict[str, Any]) -> dict[str, str]:
    """Each distinct request of a run -> what came back to it (each time it was sent, sorted), without
    ids and timings: two runs whose maps are equal were answered alike. Identical requests are one key: the
    reference server gives the n-th of them its n-th draw, and which one is n-th depends on the order they
    arrive in when sent together."""
    got: dict[str, list[str]] = {}
    seen: set[str] = set()
    for check in res["checks"]:
        for ex in check["exchanges"]:
            if ex.get("xid") in seen:
                continue
            seen.add(ex.get("xid"))
            body: Any = ex.get("body_text")
            with contextlib.suppress(ValueError, TypeError):
                body = json.loads(body)
            events = [
                e.get("json") if e.get("json") is not None else e.get("data") for e in ex.get("events") or []
            ]
            key = f"{ex.get('method')} {ex.get('url', '').rsplit('/', 1)[-1]} {ex.get('request_body')}"
            got.setdefault(key, []).append(
                json.dumps(_stable([ex.get("status"), body, events]), sort_keys=True)
            )
    return {k: json.dumps(sorted(v)) for k, v in got.items()}


def _deterministic(key: str) -> bool:
    """The request (an ``answers`` key) is seeded or greedy: its answer does not depend on a draw order."""
    try:
        body = json.loads(key.split(" ", 2)[2])
    except (ValueError, IndexError):
        return False
    return isinstance(body, dict) and (body.get("seed") is not None or body.get("temperature") == 0)


def judge(report: Path, code: int | None, base: dict[str, Any] | None) -> dict[str, Any]:
    """What a run said: exit code, failing requirements, verdicts that differ from the baseline's, answers
    that differ from the baseline's (how many, and the first), 5xx answers, cost."""
    path = report / "results.json"
    out: dict[str, Any] = {"exit_code": code, "failed": [], "changed": {}, "requests": None}
    if not path.exists():
        return out
    res = json.loads(path.read_text(encoding="utf-8"))
    verdicts = {rid: r["verdict"] for rid, r in res["requirements"].items()}
    out["failed"] = sorted(rid for rid, v in verdicts.items() if v == "fail")
    out["levels"] = sorted({res["requirements"][rid]["level"] for rid in out["failed"]})
    got = answers(res)
    fives = [k for k, v in got.items() if any((json.loads(a)[0] or 0) >= 500 for a in json.loads(v))]
    out["server_errors"] = len(fives)
    if fives:
        out["first_server_error"] = fives[0][:300]
    if base is not None:
        bv, ba = base["verdicts"], base["answers"]
        out["changed"] = {rid: f"{bv.get(rid)} -> {v}" for rid, v in verdicts.items() if bv.get(rid) != v}
        noisy = base.get("noisy", set())
        differ = sorted(k for k in set(ba) | set(got) if ba.get(k) != got.get(k) and k not in noisy)
        out["_differ"] = differ
        out["answers_differ"] = len(differ)
        # of those, the requests no draw order can change (seeded, or greedy): a difference there is real
        out["answers_differ_deterministic"] = sum(_deterministic(k) for k in differ)
        out["differ_keys"] = [k[:240] for k in differ[:8]]
        if differ:
            out["first_difference"] = differ[0][:300]
    out["requests"] = res["cost"]["requests"]
    out["verdicts"] = verdicts
    out["answers"] = got
    return out


def _child(source: str | None, workdir: Path, max_duration: float) -> None:
    """In the forked child: the reference package anew over ``source`` (None: as it is), then one run."""
    code = 4
    try:
        os.setpgid(0, 0)
        fd = os.open(workdir / "run.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        soft = 4 << 30  # a mutant that allocates without end is stopped, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
        import types

        import conformance

        for name in [
            n for n in sys.modules if n == "conformance.reference" or n.startswith("conformance.reference.")
        ]:
            del sys.modules[name]
        with contextlib.suppress(AttributeError):
            delattr(conformance, "reference")
        if source is not None:
            path = workdir / "model.py"
            path.write_text(source, encoding="utf-8")
            mod = types.ModuleType(MODULE)
            mod.__file__ = str(path)
            mod.__package__ = "conformance.reference"
            sys.modules[MODULE] = mod
            exec(compile(source, str(path), "exec"), mod.__dict__)  # noqa: S102 - the mutant under test
        import conformance.reference  # noqa: F401 - app.py, server.py over the (mutated) model

        if source is not None:
            conformance.reference.model = sys.modules[MODULE]  # type: ignore[attr-defined]
        from conformance.cli import main

        code = main(run_args(workdir / "report", max_duration))
    except BaseException:  # noqa: BLE001 - the mutant broke the import or the run: that is a kill
        import traceback

        traceback.print_exc()
        code = 98
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 97)


def fork_run(source: str | None, workdir: Path, timeout: float) -> dict[str, Any]:
    """One run in a forked child; its exit code (None: killed at the timeout), wall and CPU seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        _child(source, workdir, max(5.0, timeout - 10.0))
    timed_out = False
    deadline = t0 + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the draw helper of a child killed early
        os.killpg(pid, signal.SIGKILL)
    code = None if timed_out else (os.waitstatus_to_exitcode(status))
    return {
        "exit_code": code,
        "timed_out": timed_out,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


# ---- main --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None, allow_abbrev=False)
    ap.add_argument("--sample", type=int, metavar="N", help="run a deterministic sample of N mutants")
    ap.add_argument("--seed", type=int, default=24, help="the sample's seed (default 24)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this mutant (mutmut name, its number suffix or id; repeatable)",
    )
    ap.add_argument(
        "--timeout", type=float, default=90.0, help="seconds a mutant's run may take (default 90)"
    )
    ap.add_argument(
        "--working-tree", action="store_true", help="mutate the working tree's model.py, not HEAD's"
    )
    ap.add_argument("--list", action="store_true", help="list the mutants (id and name) and stop")
    ap.add_argument(
        "--out",
        help="write the figure under the key `mutation` of this JSON file "
        "(default for a full run: benchmarks/results.json)",
    )
    ap.add_argument("--details", help="write every mutant's record to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep each run's report folder (under the snapshot)")
    ap.add_argument(
        "--survivors-of", metavar="DETAILS", help="run only the survivors of an earlier --details file"
    )
    ap.add_argument(
        "--reclassify",
        metavar="DETAILS",
        help="run nothing: apply the table as it is now to the records of an earlier --details file",
    )
    args = ap.parse_args(argv)
    if args.reclassify:
        return reclassify(Path(args.reclassify), args.out)
    started, cpu0 = time.perf_counter(), time.process_time()
    snap, commit = snapshot(args.working_tree)
    source = (snap / MODEL_REL).read_text(encoding="utf-8")
    mutants = generate(source)
    total_generated = len(mutants)
    if args.list:
        for m in mutants:
            _say(f"{m.name}\tL{m.line}\t{m.id}")
        _say(f"{len(mutants)} mutants")
        return 0
    selected = mutants
    if args.survivors_of:
        earlier = json.loads(Path(args.survivors_of).read_text(encoding="utf-8"))["records"]
        args.only += [r["id"] for r in earlier if not r["killed"]]
    if args.only:
        want = set(args.only)
        selected = [m for m in mutants if m.name in want or m.id in want or m.name.rsplit(".", 1)[1] in want]
    if args.sample is not None:
        selected = sample(selected, args.sample, args.seed)
    table = load_table()
    full = not args.only and args.sample is None
    out_path = args.out or (str(ROOT / "benchmarks" / "results.json") if full else None)

    # the suite from the snapshot, imported once, in this process
    sys.path.insert(0, str(snap))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(snap), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.chdir(snap)  # hypothesis's example database and anything else written to the current folder: here
    import conformance

    if not Path(conformance.__file__).resolve().is_relative_to(snap):
        raise SystemExit(f"conformance imported from {conformance.__file__}, not from the snapshot {snap}")
    from conformance.cli import main as cli_main

    _say(
        f"mutation: {len(selected)} of {total_generated} mutants of {MODEL_REL} ({commit[:12]}), "
        f"snapshot {snap}"
    )
    model_file = str(snap / MODEL_REL)
    executed: set[int] = set()
    base_dir = snap / "runs" / "baseline"
    t0, c0 = time.perf_counter(), time.process_time()
    with traced(model_file, executed):
        base_code = cli_main(run_args(base_dir / "report", args.timeout))
    base = judge(base_dir / "report", base_code, None)
    reference = {"verdicts": base.pop("verdicts", {}), "answers": base.pop("answers", {})}
    baseline = {
        "exit_code": base_code,
        "requests": base["requests"],
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "note": "traced (line coverage of model.py): slower",
    }
    if base_code != 0 or base["failed"]:
        raise SystemExit(
            f"the unmutated baseline run is not clean: exit {base_code}, failed {base['failed']}"
        )
    stray = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stray:
        _say(f"warning: threads left by the baseline run before forking: {stray}")
    stmt_of = _statement_lines(source)
    executed_stmts = {stmt_of.get(line, line) for line in executed}

    control = fork_run(source, snap / "runs" / "control", args.timeout)
    control |= judge(snap / "runs" / "control" / "report", control["exit_code"], reference)
    control.pop("verdicts", None)
    control.pop("answers", None)
    # answers that differ between two runs of the same server (none expected: the reference is deterministic)
    reference["noisy"] = set(control.pop("_differ", []))
    _say(
        f"baseline: exit {base_code}, {base['requests']} requests, {baseline['wall_s']} s (traced); control "
        f"child: exit {control['exit_code']}, {control['requests']} requests, {control['wall_s']} s wall, "
        f"{control['cpu_s']} s CPU"
    )
    _say(
        f"control: {control.get('answers_differ')} answers differ from the baseline's (left out of the "
        "comparisons)"
    )
    if control["exit_code"] != 0 or control["failed"] or control["changed"]:
        raise SystemExit(f"the control run (unmutated model, forked) disagrees with the baseline: {control}")

    records: list[dict[str, Any]] = []
    for i, m in enumerate(selected, 1):
        work = snap / "runs" / m.name.rsplit(".", 1)[1]
        r = fork_run(m.source, work, args.timeout)
        r |= judge(work / "report", r["exit_code"], reference)
        r.pop("verdicts", None)
        r.pop("answers", None)
        r.pop("_differ", None)
        killed = r["timed_out"] or r["exit_code"] != 0 or bool(r["failed"])
        status = "timed out" if r["timed_out"] else ("killed" if killed else "survived")
        reached = any(stmt_of.get(line, line) in executed_stmts for line in m.lines)
        entry = table.get(m.id)
        rec = (
            {k: v for k, v in asdict(m).items() if k != "source"}
            | r
            | {
                "status": status,
                "killed": killed,
                "reached": reached,
                "class": entry["class"] if entry and not killed else None,
            }
        )
        if killed and entry:
            rec["table_error"] = f"classified {entry['class']} but killed"
        if not killed and r["exit_code"] == 0:
            with contextlib.suppress(OSError):
                rec["log_tail"] = (work / "run.log").read_text(encoding="utf-8", errors="replace")[-300:]
        records.append(rec)
        why = (
            f"exit {r['exit_code']}, failed {','.join(r['failed'][:4])}{' ...' * (len(r['failed']) > 4)}"
            if killed and not r["timed_out"]
            else (
                ""
                if killed
                else ("unreached; " if not reached else "")
                + (rec["class"] or "UNCLASSIFIED")
                + f"; {r.get('answers_differ')} answers differ ({r.get('answers_differ_deterministic')} "
                f"seeded or greedy), {r.get('server_errors')} 5xx"
            )
        )
        _say(
            f"[{i}/{len(selected)}] {status:9} {m.name.rsplit('.', 1)[1]} L{m.line} ({r['requests']} req, "
            f"{r['wall_s']} s) {why}"
        )
        if not args.keep:
            shutil.rmtree(work / "report", ignore_errors=True)

    figure = summarise(records, table, len(selected), total_generated)
    figure["baseline"] = baseline
    figure["control"] = {k: control[k] for k in ("exit_code", "requests", "wall_s", "cpu_s")}
    figure["wall_s"] = round(time.perf_counter() - started, 1)
    figure["cpu_s_children"] = round(sum(r["cpu_s"] for r in records), 1)
    figure["cpu_s_driver"] = round(time.process_time() - cpu0, 1)
    figure["requests"] = sum(r["requests"] or 0 for r in records)
    figure["tool"] = _tool_version()
    figure["commit"] = commit
    shown = sys.argv[1:] if argv is None else argv
    figure["command"] = " ".join(["python benchmarks/mutation.py", *shown])
    figure["kill_rule"] = (
        "exit code != 0, a requirement of any level failed, or past --timeout; "
        "default run (--level may, --fail-on must)"
    )
    report(figure, records)
    if args.details:
        run_fields = {k: v for k, v in figure.items() if k in RUN_FIELDS}
        Path(args.details).write_text(
            json.dumps({"run": run_fields, "records": records}, indent=1) + "\n", encoding="utf-8"
        )
    if out_path:
        write_figure(Path(out_path), figure)
    if not args.keep:
        shutil.rmtree(snap, ignore_errors=True)
    return 0


def classify(records: list[dict[str, Any]], table: dict[str, dict[str, Any]]) -> None:
    """Each record's class from the table (a killed mutant has none: the table is wrong if it names one)."""
    for rec in records:
        entry = table.get(rec["id"])
        rec["class"] = entry["class"] if entry and not rec["killed"] else None
        rec.pop("table_error", None)
        if rec["killed"] and entry:
            rec["table_error"] = f"classified {entry['class']} but killed"


def reclassify(details: Path, out: str | None) -> int:
    """The figure of an earlier run (its --details file) under the table as it is now."""
    data = json.loads(details.read_text(encoding="utf-8"))
    records, run_fields = data["records"], data["run"]
    table = load_table()
    classify(records, table)
    figure = summarise(records, table, len(records), run_fields["mutants_generated"]) | {
        k: v for k, v in run_fields.items() if k != "mutants_generated"
    }
    report(figure, records)
    if out:
        write_figure(Path(out), figure)
    return 0


def write_figure(path: Path, figure: dict[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data["mutation"] = figure
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _say(f"wrote {path} (key `mutation`)")


def summarise(records: list[dict[str, Any]], table: dict[str, dict[str, Any]], run: int, total: int) -> dict:
    killed = [r for r in records if r["killed"]]
    survivors = [r for r in records if not r["killed"]]
    equivalent = [r for r in survivors if r["class"] == "equivalent"]
    conformant = [r for r in survivors if r["class"] == "conformant"]
    blind = [r for r in survivors if r["class"] == "blind-spot"]
    unclassified = [r for r in survivors if r["class"] is None]
    denominator = len(records) - len(equivalent)
    by_function: dict[str, dict[str, int]] = {}
    for r in records:
        f = by_function.setdefault(r["function"], {"mutants": 0, "killed": 0, "equivalent": 0})
        f["mutants"] += 1
        f["killed"] += r["killed"]
        f["equivalent"] += r["class"] == "equivalent"
    killers: dict[str, int] = {}
    for r in killed:
        for rid in r["failed"]:
            killers[rid] = killers.get(rid, 0) + 1
    return {
        "scope": MODEL_REL,
        "mutants_generated": total,
        "mutants_run": run,
        "killed": len(killed),
        "killed_by_gate": sum(1 for r in killed if r["exit_code"] != 0),
        "killed_by_should_or_may_only": sum(1 for r in killed if r["exit_code"] == 0),
        "timed_out": sum(1 for r in killed if r["timed_out"]),
        "survived": len(survivors),
        "equivalent": len(equivalent),
        "conformant": len(conformant),
        "blind_spots": len(blind),
        "unclassified": len(unclassified),
        "score": round(len(killed) / denominator, 4) if denominator else None,
        "score_gate_only": round(sum(1 for r in killed if r["exit_code"] != 0) / denominator, 4)
        if denominator
        else None,
        # the contract's score: what a contract can kill at all (neither equivalent nor another conformant
        # model)
        "score_contract": round(len(killed) / (denominator - len(conformant)), 4)
        if denominator - len(conformant)
        else None,
        # each survivor, its class and evidence (the reasons: benchmarks/mutation_equivalents.toml)
        "survivors": [
            {
                "name": r["name"].rsplit(".", 1)[1],
                "id": r["id"],
                "class": r["class"],
                "reached": r["reached"],
                "answers_differ_deterministic": r.get("answers_differ_deterministic"),
                "server_errors": r.get("server_errors"),
            }
            | ({"verdicts_changed": r["changed"]} if r["changed"] else {})
            | ({"requirement": table[r["id"]].get("requirement")} if r["class"] == "blind-spot" else {})
            for r in survivors
        ],
        "table_errors": [f"{r['id']}: {r['table_error']}" for r in records if r.get("table_error")],
        "by_function": by_function,
        "killed_by_requirement": dict(sorted(killers.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def report(figure: dict[str, Any], records: list[dict[str, Any]]) -> None:
    _say("")
    for r in records:
        if r["killed"]:
            continue
        _say(
            f"survivor {r['name'].rsplit('.', 1)[1]} ({r['class'] or 'UNCLASSIFIED'}"
            f"{'' if r['reached'] else ', line not executed by the baseline run'})"
        )
        _say("  " + r["diff"].rstrip().replace("\n", "\n  "))
        if r["changed"]:
            _say(f"  verdicts changed: {r['changed']}")
    f = figure
    _say(
        f"\nmutants {f['mutants_run']} (of {f['mutants_generated']}): killed {f['killed']} "
        f"(gate {f['killed_by_gate']}"
        f", SHOULD/MAY only {f['killed_by_should_or_may_only']}, timed out {f['timed_out']}), survived "
        f"{f['survived']} (equivalent {f['equivalent']}, conformant {f['conformant']}, "
        f"blind spots {f['blind_spots']}, unclassified "
        f"{f['unclassified']})"
    )
    _say(
        f"score killed / (total - equivalent) = {f['score']}; killed / (total - equivalent - conformant) = "
        f"{f['score_contract']}; {f['requests']} requests, "
        f"{f['wall_s']} s wall, "
        f"{f['cpu_s_children']} s CPU in the runs"
    )
    for e in f["table_errors"]:
        _say(f"table error: {e}")


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return f"mutmut {version('mutmut')}"
    except Exception:  # noqa: BLE001
        return "mutmut"


if __name__ == "__main__":
    sys.exit(main())
