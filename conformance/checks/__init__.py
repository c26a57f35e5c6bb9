"""The conformance checks: plain functions registered with ``@check(...)`` (conformance.engine.registry).

Importing this package registers every check (each module below, in the run's order); the engine runs them,
the CLI and the pytest plugin are its front-ends. The modules keep their ``test_`` names: a check's key is the
pytest node id it always had.
"""

from conformance.checks import (  # noqa: F401  (each import registers its module's checks)
    test_auth,
    test_context,
    test_core,
    test_errors,
    test_generated,
    test_json,
    test_logit_bias,
    test_logprobs,
    test_n,
    test_penalties,
    test_ranges,
    test_reasoning,
    test_sampling,
    test_sdk,
    test_seed,
    test_stop,
    test_streaming,
    test_tools,
    test_usage,
)
