"""Flakiness: run the full suite N times against one target and count runs whose verdicts differ.

    python benchmarks/flakiness.py                      # 20 runs against the embedded reference server
    python benchmarks/flakiness.py --runs 5 --base-url http://127.0.0.1:8080/v1 --model tiny-chat \\
        --profile targets/llamacpp/profile.toml --expectations targets/llamacpp/expectations.toml

Prints, per run, the exit code and the per-requirement verdicts' fingerprint, then how many runs agree with
the first. Any difference is listed (requirement: verdicts seen), since a flaky verdict is a defect.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed to `chat-conformance run`")
    args, unknown = ap.parse_known_args()
    extra = [*unknown, *args.extra]
    seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    prints = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / str(i)
            proc = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--report-dir", str(out),
                                   *extra], capture_output=True, text=True)
            results = json.loads((out / "results.json").read_text(encoding="utf-8"))
            verdicts = {k: v["verdict"] for k, v in results["requirements"].items()}
            for k, v in verdicts.items():
                seen[k][v] += 1
            fp = hashlib.sha256(json.dumps(verdicts, sort_keys=True).encode()).hexdigest()[:12]
            prints.append((proc.returncode, fp))
            print(f"run {i + 1:2}: exit {proc.returncode}, verdicts {fp}, {results['verdict']}", flush=True)
    same = sum(1 for p in prints if p == prints[0])
    print(f"{same} of {len(prints)} runs identical to the first (exit code and every requirement's verdict)")
    for k, counter in sorted(seen.items()):
        if len(counter) > 1:
            print(f"  FLAKY {k}: {dict(counter)}")
    return 0 if same == len(prints) else 1


if __name__ == "__main__":
    sys.exit(main())
