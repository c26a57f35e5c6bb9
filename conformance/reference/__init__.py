"""The embedded reference server: a conformant endpoint over a tiny deterministic model, with fault modes.

Never imports the checks, the client, the plugin or the CLI: its correctness does not come from the checks.
"""

from conformance.reference.app import create_app
from conformance.reference.faults import FAULTS, Fault
from conformance.reference.server import RunningServer, serve_forever, start_in_thread

__all__ = ["create_app", "start_in_thread", "serve_forever", "RunningServer", "FAULTS", "Fault"]
