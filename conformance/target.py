"""Where the suite sends its requests, and with what limits (pure configuration, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.errors import UsageError

__all__ = ["Limits", "Target", "check_base_url", "key_env_unset"]


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
    api_key_env: str = "CONFORMANCE_API_KEY"  # where api_key was read: reproducers and errors name it
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
        shown = Target(base_url, "").display_url  # a user:password@ in it is never echoed
        raise UsageError(f"--base-url {shown!r} is not an http(s) URL: give e.g. http://127.0.0.1:8080/v1")
    if base_url.rstrip("/").endswith("/chat/completions"):
        raise UsageError("--base-url must end before /chat/completions: give e.g. http://127.0.0.1:8080/v1")
    return base_url.rstrip("/")


def key_env_unset(name: str, what: str = "the API key", option: str = "--api-key-env") -> UsageError:
    """The one-line error for ``--api-key-env NAME`` when NAME is not set: it names the variable, unless what
    was given looks like the key itself (a key prefix, a long random run, characters no variable name has):
    that is never echoed."""
    from conformance.errors import UsageError
    from conformance.evidence import ENV_NAME, looks_like_secret

    if looks_like_secret(name) or not ENV_NAME.fullmatch(name):
        return UsageError(f"{option} takes the NAME of an environment variable, not the key itself: export "
                          f"the key (export CONFORMANCE_API_KEY=...) and give {option} CONFORMANCE_API_KEY")
    return UsageError(f"environment variable {name} is not set: export it with {what}")


# said wherever a run against the embedded reference server shows its verdict: a self-test is no verdict on
# the user's endpoint (a CI job whose base URL came out empty must not read as a conformant target)
EMBEDDED_NOTE = "embedded reference server — a self-test, not your endpoint"
