"""Writing a file so that a reader never sees half of it (a report read by a CI step while the run ends, the
budget shared by workers): the one atomic writer. Pure file I/O, no other import of the package."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path | str, data: str | bytes, *, errors: str = "strict") -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file beside it, renamed over it: a
    reader sees the old file or the new one, whole. The temporary name is this process's and thread's own,
    so that writers of the same path never share one. Returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8", errors=errors)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
