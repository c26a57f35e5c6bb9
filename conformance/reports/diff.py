"""What changed between two runs: regressions, fixes and other verdict changes, per requirement."""

from __future__ import annotations

from typing import Any

__all__ = ["diff", "render_diff", "REGRESSION_FROM", "FIX_TO"]

REGRESSION_FROM = ("pass", "waived", "unsupported", "unexpectedly-passing")  # ... -> fail is a regression
FIX_TO = ("pass", "unexpectedly-passing")  # fail -> ... is a fix


def _change(rid: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    ref = new or old or {}
    return {"id": rid, "level": ref.get("level", "?"), "capability": ref.get("capability", "?"),
            "old": old["verdict"] if old else None, "new": new["verdict"] if new else None,
            "reason": (new or {}).get("reason", "")}


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Compare two results dicts requirement by requirement.

    Returns ``{"regressions": [...], "fixes": [...], "changes": [...], "notes": [...]}``; each change is
    ``{id, level, capability, old, new, reason}`` (``old``/``new`` is None when the requirement is absent
    from that run). A regression is pass/waived/unsupported -> fail; a fix is fail -> pass; every other
    verdict change (and a requirement added or removed) is in ``changes``.
    """
    old_reqs, new_reqs = old.get("requirements", {}), new.get("requirements", {})
    out: dict[str, Any] = {"regressions": [], "fixes": [], "changes": [], "notes": []}
    for rid in list(old_reqs) + [r for r in new_reqs if r not in old_reqs]:
        o, n = old_reqs.get(rid), new_reqs.get(rid)
        if o and n and o["verdict"] == n["verdict"]:
            continue
        ch = _change(rid, o, n)
        if ch["old"] in REGRESSION_FROM and ch["new"] == "fail":
            out["regressions"].append(ch)
        elif ch["old"] == "fail" and ch["new"] in FIX_TO:
            out["fixes"].append(ch)
        else:
            out["changes"].append(ch)
    for key, what in (("spec_hash", "the contract (spec hash)"), ("suite_version", "the suite version"),
                      ("profile", "the profile"), ("level", "the level judged")):
        if old.get(key) != new.get(key):
            out["notes"].append(f"{what} differs: {old.get(key)} -> {new.get(key)}")
    ot, nt = old.get("target", {}), new.get("target", {})
    if (ot.get("base_url"), ot.get("model")) != (nt.get("base_url"), nt.get("model")):
        out["notes"].append(f"the target differs: {ot.get('model')} @ {ot.get('base_url')} -> "
                            f"{nt.get('model')} @ {nt.get('base_url')}")
    out["old_verdict"], out["new_verdict"] = old.get("verdict"), new.get("verdict")
    return out


def _line(kind: str, ch: dict[str, Any]) -> str:
    reason = " ".join(str(ch.get("reason") or "").split())
    reason = (reason[:157] + "...") if len(reason) > 160 else reason
    tail = f": {reason}" if reason and ch["new"] not in ("pass", None) else ""
    return (f"{kind:<10} {ch['id']} ({ch['level']}, {ch['capability']}): {ch['old'] or 'absent'} -> "
            f"{ch['new'] or 'absent'}{tail}")


def render_diff(d: dict[str, Any]) -> str:
    """One line per change (regressions first), the notes, then a one-line count."""
    lines = [_line("REGRESSED", ch) for ch in d["regressions"]]
    lines += [_line("FIXED", ch) for ch in d["fixes"]]
    lines += [_line("CHANGED", ch) for ch in d["changes"]]
    lines += [f"note: {n}" for n in d.get("notes", [])]
    verdict = (f"; verdict {d.get('old_verdict')} -> {d.get('new_verdict')}"
               if d.get("old_verdict") != d.get("new_verdict") else "")
    lines.append(f"{len(d['regressions'])} regression(s), {len(d['fixes'])} fix(es), "
                 f"{len(d['changes'])} other change(s){verdict}")
    return "\n".join(lines) + "\n"
