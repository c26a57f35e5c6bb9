"""The conformance checks: pytest tests shipped with the package, run against a live target."""
