"""Where the suite sends its requests, and with what limits (pure configuration, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Limits", "Target", "check_base_url"]


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 5.0
    idle_timeout: float = 20.0  # longest silence between bytes / events
    total_timeout: float = 60.0  # deadline for one whole exchange
    max_bytes: int = 4 * 1024 * 1024  # byte cap per response (body or whole stream)
    max_event_bytes: int = 1024 * 1024  # byte cap per SSE event
    max_retries: int = 2  # on 429 / 503
    max_retry_after: float = 10.0  # a longer Retry-After is not waited for: the retry is abandoned
    rate_limit: float | None = None  # requests per second, shared by all workers
    max_requests: int | None = None  # budget for the whole run
    max_tokens_total: int | None = None  # budget of completion+prompt tokens for the whole run
    default_max_tokens: int = 8  # injected in every request that does not set max_tokens


@dataclass(frozen=True)
class Target:
    base_url: str  # ends before /chat/completions, e.g. http://127.0.0.1:8080/v1
    model: str
    api_key: str | None = field(default=None, repr=False)  # never printed
    profile: str = "seed"
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry credentials
    verify_tls: bool | str = True  # False only when the user opts in; a path names a CA bundle
    limits: Limits = field(default_factory=Limits)

    @property
    def display_url(self) -> str:
        """The base URL with any user:password@ masked, for reports."""
        scheme, sep, rest = self.base_url.partition("://")
        host, slash, path = rest.partition("/")
        if "@" in host:
            host = "***:***@" + host.rsplit("@", 1)[1]
        return f"{scheme}{sep}{host}{slash}{path}"

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")


def check_base_url(base_url: str) -> str:
    """A base URL the suite can append its paths to, else a one-line UsageError naming the fix."""
    from conformance.errors import UsageError

    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"--base-url {base_url!r} is not an http(s) URL: give e.g. http://127.0.0.1:8080/v1")
    if base_url.rstrip("/").endswith("/chat/completions"):
        raise UsageError("--base-url must end before /chat/completions: give e.g. http://127.0.0.1:8080/v1")
    return base_url.rstrip("/")
