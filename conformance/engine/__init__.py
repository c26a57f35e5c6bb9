"""The engine: the registry of checks and the run that calls each once (conformance.engine.run)."""
