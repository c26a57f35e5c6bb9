"""The draw helper process (``python -m conformance.checks._draw_ahead``, started by
``_generated.draw_ahead``): reads one pickled job on stdin, writes each property's drawn list, pickled, on
stdout as soon as it is drawn (spec/DECISIONS.md#draw-ahead). It sends nothing to any target."""

from __future__ import annotations

import pickle
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's: the run ends this process
    from conformance.checks._generated import helper_draws

    job = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer
    for drawn in helper_draws(*job):
        pickle.dump(drawn, out)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
