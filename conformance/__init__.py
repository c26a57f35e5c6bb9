"""chat-conformance: a contract conformance suite for POST /chat/completions."""

__version__ = "0.1.0"
__all__ = ["__version__"]
