"""The ``report`` and ``diff`` commands (the CLI wires them in): they read results.json files only."""

from __future__ import annotations

from pathlib import Path

from conformance.files import write_atomic
from conformance.reports.schema import load_results

__all__ = ["cmd_report", "cmd_diff"]


def _write(path: Path, text: str) -> Path:
    return write_atomic(path, text)


def cmd_report(paths: list[str], out: str) -> int:
    """One results.json: re-render report.html, summary.md and junit.xml into ``out``. Several: write
    ``out/matrix.html`` (and ``out/matrix.md``). A missing or invalid file raises UsageError (one line)."""
    from conformance.errors import UsageError

    if not paths:
        raise UsageError("no results file given: pass the results.json of a run (several make a matrix)")
    loaded = [load_results(p) for p in paths]
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output directory {out!r} ({exc.strerror}): give a writable "
                         "--out") from None
    written: list[Path] = []
    if len(loaded) == 1:
        from conformance.reports.html import write_html
        from conformance.results import render_junit, render_summary

        results = loaded[0]
        written.append(write_html(results, out_dir))
        written.append(_write(out_dir / "summary.md", render_summary(results)))
        written.append(_write(out_dir / "junit.xml", render_junit(results)))
    else:
        from conformance.reports.matrix import matrix_markdown, write_matrix

        written.append(write_matrix(loaded, out_dir))
        written.append(_write(out_dir / "matrix.md", matrix_markdown(loaded)))
    for p in written:
        print(f"wrote {p}")
    return 0


def cmd_diff(old: str, new: str) -> int:
    """Print what changed from the ``old`` run to the ``new`` one; 1 when anything regressed, else 0."""
    from conformance.reports.diff import diff, render_diff

    d = diff(load_results(old), load_results(new))
    print(render_diff(d), end="")
    return 1 if d["regressions"] else 0
