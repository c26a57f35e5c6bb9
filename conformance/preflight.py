"""Preflight: before any check, is the target there, speaking the chat API, serving the model?

One request (``POST {base}/chat/completions``, ``max_tokens`` 1) decides, before pytest starts, what no check
should have to: a configuration mistake is the user's (``UsageError``, exit 2: an unknown model), a target
that is unreachable, refuses the key, is not the API at all or stays not ready is ``TargetUnreachable``
(exit 3). Each is one line naming the fix; no report is written and nothing reads "NOT CONFORMANT".

A target that is still warming up (503, or 429 with a Retry-After) is waited for, with a line per wait, up to
``wait_ready`` seconds (spec/DECISIONS.md#preflight); a refused connection only with ``wait_for_connect``.
Only when the first answer is wrong does the preflight send more: ``GET {base}/models`` to name the ids
served, and one probe of the likely base URL (``/v1`` added, doubled or dropped): at most four requests.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from .client import Client, retry_delay
from .errors import TargetUnreachable, UsageError
from .evidence import SENSITIVE_HEADERS, Exchange
from .target import Target

__all__ = ["DEFAULT_WAIT_READY", "preflight", "parse_headers"]

DEFAULT_WAIT_READY = 300.0  # seconds: a model that loads in a deploy pipeline, well inside a CI job's timeout
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)  # waits when the target asks none (503 without Retry-After, refused)
MIN_WAIT_S = 0.5  # the shortest wait between two requests, whatever the target asks
HINTLESS_429_RETRIES = 2  # a 429 without Retry-After may be a spent quota: retried twice, not for minutes
MAX_IDS_SHOWN = 10
_BODY = {"max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
_BASE_URL_SHAPE = "it ends before /chat/completions, usually in /v1"
_MODEL_CODES = ("model_not_found", "deploymentnotfound", "model_not_available")
_MODEL_TEXT = re.compile(
    r"model\b.{0,200}\b(does not exist|do not exist|doesn't exist|not found|not exist|not served|unknown|"
    r"not available|is not supported|no such|invalid)"
    r"|\b(unknown|invalid|unsupported|no such) model"
    r"|\bmodel[_ ]not[_ ]found",
    re.IGNORECASE | re.DOTALL,
)


def parse_headers(values: list[str]) -> dict[str, str]:
    """``--header 'NAME: VALUE'`` options as a dict (the plugin's rule; its message, never the value)."""
    headers: dict[str, str] = {}
    for h in values:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError("a --header is not 'NAME: VALUE': write e.g. --header 'X-Org: acme'")
        headers[name.strip()] = value.strip()
    return headers


def preflight(
    target: Target,
    *,
    wait_ready: float = DEFAULT_WAIT_READY,
    wait_for_connect: bool = False,
    on_wait: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return when the target answers the chat API for ``target.model``; else raise ``UsageError`` (the model
    is not served) or ``TargetUnreachable`` (unreachable, key refused, not the chat API, not ready in time).

    A 503 (with its Retry-After, else a backoff of 1, 2, 4, 8 s) or a 429 with a Retry-After is sent
    again until ``wait_ready`` seconds have passed (0: never waited for); ``on_wait`` gets one line before
    each wait. A connect failure (refused, no route, DNS) is waited for the same way only with
    ``wait_for_connect``; a TLS error never is. Each request is bounded by ``target.limits.total_timeout``,
    so the whole wait never exceeds ``wait_ready`` plus one request; the client's own retries are off (the
    wait is this function's)."""
    if not math.isfinite(wait_ready) or wait_ready < 0:
        raise UsageError("--wait-ready must be 0 or more seconds: give e.g. --wait-ready 300")
    target = replace(target, limits=replace(target.limits, max_retries=0))
    start = clock()
    deadline = start + wait_ready
    body = {"model": target.model, **_BODY}
    with Client(target) as c:
        attempt = 0
        while True:
            ex = c.chat(body, label="preflight")
            wait = _wait_asked(ex, attempt, wait_for_connect)
            if wait is None:
                break
            delay, why = wait
            left = deadline - clock()
            # a Retry-After past the deadline (by more than its whole-second rounding) is not waited for
            if wait_ready <= 0 or left <= 0 or (why.explicit and delay >= left + 1.0):
                raise TargetUnreachable(_not_ready(target, ex, why, wait_ready, clock() - start))
            delay = min(delay, left)
            if on_wait is not None:
                on_wait(f"target {why.text}: waiting {_secs(delay)}, {_secs(left)} left of --wait-ready "
                        f"{_secs(wait_ready, unit=False)}")
            sleep(delay)
            attempt += 1
        _judge(c, target, ex, wait_for_connect)


# ---- waiting ---------------------------------------------------------------------------------------------


class _Why:
    def __init__(self, text: str, explicit: bool) -> None:
        self.text, self.explicit = text, explicit  # explicit: the target named the wait (Retry-After)


def _wait_asked(ex: Exchange, attempt: int, wait_for_connect: bool) -> tuple[float, _Why] | None:
    """(seconds, why) when this answer means "not ready yet, ask again"; None when it is the answer."""
    backoff = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
    if ex.status is None:
        if wait_for_connect and _connect_failed(ex.transport_error):
            return backoff, _Why(f"not accepting connections yet ({_clean(ex.transport_error, 120)})", False)
        return None
    if ex.status not in (429, 503):
        return None
    what = "not ready" if ex.status == 503 else "rate-limited the first request"
    asked = retry_delay(ex.response_headers)
    if asked is not None:  # a Retry-After of 0 is not a reason to poll without a pause
        return max(asked, MIN_WAIT_S), _Why(f"{what} (HTTP {ex.status}, Retry-After {_secs(asked)})", True)
    if ex.status == 429 and attempt >= HINTLESS_429_RETRIES:
        return None
    return backoff, _Why(f"{what} (HTTP {ex.status}, no Retry-After)", False)


def _connect_failed(error: str | None) -> bool:
    """A connection not (yet) accepted: refused, unroutable, unresolved, timed out; never a TLS failure."""
    if not error or not error.startswith("connect failed"):
        return False
    low = error.lower()
    return not any(s in low for s in ("ssl", "certificate", "tls"))


def _not_ready(target: Target, ex: Exchange, why: _Why, wait_ready: float, waited: float) -> str:
    url = target.display_url
    if wait_ready <= 0:
        return (f"target {url} {why.text}; --wait-ready 0 waits for none: give --wait-ready SECONDS "
                "to wait for it")
    if why.explicit and waited < wait_ready:
        return (f"target {url} {why.text}: more than the {_secs(max(0.0, wait_ready - waited))} left of "
                f"--wait-ready {_secs(wait_ready, unit=False)}: raise --wait-ready or retry later")
    return (f"target {url} was not ready after waiting {_secs(waited)} (--wait-ready "
            f"{_secs(wait_ready, unit=False)}): {why.text}; raise --wait-ready or retry later")


def _secs(s: float, *, unit: bool = True) -> str:
    r = round(s) if s >= 10 else round(s, 1)
    text = f"{r:.0f}" if r == int(r) else f"{r:.1f}"
    return f"{text} s" if unit else text


# ---- judging the answer ----------------------------------------------------------------------------------


def _judge(c: Client, target: Target, ex: Exchange, wait_for_connect: bool) -> None:
    url = target.display_url
    if ex.status is None:
        error = ex.transport_error or "no answer"
        hint = ""
        if not wait_for_connect and _connect_failed(error):
            hint = " (a target still starting? add --wait-for-connect to wait for it up to --wait-ready)"
        raise TargetUnreachable(f"target {url} unreachable: {_clean(error, 200)}{hint}")
    if ex.status in (401, 403):
        raise TargetUnreachable(_refused(target, ex.status))
    if ex.status in (502, 504):
        raise TargetUnreachable(
            f"target {url} answered HTTP {ex.status} (a gateway error: the service behind it is down "
            "or overloaded)"
        )
    if ex.status == 429:
        retry = retry_delay(ex.response_headers)
        raise TargetUnreachable(
            f"target {url} rate-limited the first request (HTTP 429"
            + (f", Retry-After {retry:.0f} s" if retry is not None else ", no Retry-After")
            + "): nothing can be judged; retry later or raise the target's limits"
        )
    data, is_json = _json(ex)
    if ex.status in (400, 404, 422) and is_json:
        _check_model(c, target, ex, data)
    if 300 <= ex.status < 400:
        return  # a redirect is the run's to judge (it is not followed)
    html = _is_html(ex)
    not_json = not is_json and 200 <= ex.status < 300
    if ex.status in (404, 405) or html or not_json:
        _wrong_place(c, target, ex, html)


def _refused(target: Target, status: int) -> str:
    """A 401/403 to the preflight: a missing key and a wrong one are told apart, and the variable the run read
    the key from is named (a credential given with --header by the header's name only, never a value)."""
    url, var = target.display_url, "$" + target.api_key_env
    given = [k for k in target.extra_headers if k.lower() in SENSITIVE_HEADERS]
    refused = f"target {url} refused the credentials (HTTP {status})"
    if target.api_key:
        return (f"{refused}: the key in {var} was not accepted; check it, or name the variable holding the "
                "right one with --api-key-env")
    if given:
        return f"{refused} given with --header {given[0]}: check them, or put the key in {var}"
    return f"{refused}: no key: {var} is not set; export it with the key"


def _check_model(c: Client, target: Target, ex: Exchange, data: Any) -> None:
    """A 400/404/422 to the preflight: UsageError when it says the model is not served, or when the model is
    absent from the ids ``GET /models`` lists (only asked now: many servers answer any model name)."""
    error = _error_text(data)
    said = _says_model(data, error)
    ids = _served_ids(c)
    model = target.model
    if ids and model in ids and not said:
        return
    if not said and not ids:
        return
    what = f"HTTP {ex.status}" + (f": {_clean(error, 120)}" if error else "")
    if ids and model not in ids:
        shown = ", ".join(repr(_clean(i, 80)) for i in ids[:MAX_IDS_SHOWN])
        more = f", ... ({len(ids)} in all)" if len(ids) > MAX_IDS_SHOWN else ""
        one = "it" if len(ids) == 1 else "one of them"
        raise UsageError(
            f"model {_clean(model, 80)!r} is not served by {target.display_url} ({what}): it lists "
            f"{shown}{more}: pass {one} with --model"
        )
    if ids:  # listed, yet refused as unknown
        raise UsageError(
            f"model {_clean(model, 80)!r} is listed by {target.display_url} but refused ({what}): check "
            "--model and that the key may use it"
        )
    raise UsageError(
        f"model {_clean(model, 80)!r} is not served by {target.display_url} ({what}): pass the name of a "
        "model it serves with --model"
    )


def _wrong_place(c: Client, target: Target, ex: Exchange, html: bool) -> None:
    """404/405, an HTML page or a 2xx that is not JSON: the base URL is likely wrong (name the likely one),
    or the target does not speak the chat API."""
    url = target.display_url
    answered = f"HTTP {ex.status}" + (f" {_clean(ex.content_type, 40)}" if ex.content_type else "")
    if html:
        answered += " (a web page)"
    elif ex.status not in (404, 405):
        answered += ", not JSON"
    candidate = _likely_base(target.base_url)
    if candidate is not None:
        base, fix = candidate
        if _speaks_api(c, base):
            shown = replace(target, base_url=base).display_url
            raise TargetUnreachable(
                f"target {url} answered {answered} to POST /chat/completions, but {shown} speaks the chat "
                f"API: {fix}: --base-url {shown}"
            )
    if ex.status in (404, 405) and not html and _json(ex)[1]:
        raise TargetUnreachable(
            f"target {url} has no POST /chat/completions (answered {answered}): check --base-url "
            f"({_BASE_URL_SHAPE})"
        )
    raise TargetUnreachable(
        f"target {url} does not speak the OpenAI chat API: POST /chat/completions answered {answered}: "
        f"check --base-url ({_BASE_URL_SHAPE})"
    )


def _likely_base(base_url: str) -> tuple[str, str] | None:
    """The base URL the user probably meant, and the fix in words; None when there is no likely one."""
    base = base_url.rstrip("/")
    path = urlsplit(base).path
    if path.endswith("/v1/v1"):
        return base[: -len("/v1")], "--base-url has /v1 twice"
    if path.endswith("/chat"):
        return base[: -len("/chat")], "drop /chat"
    if not path.endswith("/v1"):
        return base + "/v1", "add /v1"
    return None


def _speaks_api(c: Client, base: str) -> bool:
    """Whether ``base`` answers the chat API: its /models lists models, else its /chat/completions answers
    JSON with a status other than 404/405 (at most two requests)."""
    probe = Client(replace(c.target, base_url=base))
    try:
        data, is_json = _json(probe.get("models", label="preflight: models at the likely base URL"))
        if is_json and _ids(data) is not None:
            return True
        ex = probe.chat({"model": c.target.model, **_BODY}, label="preflight: the likely base URL")
        return ex.status is not None and ex.status not in (404, 405) and _json(ex)[1] and not _is_html(ex)
    finally:
        probe.close()


def _served_ids(c: Client) -> list[str]:
    ex = c.get("models", label="preflight: models")
    if ex.status is None or not 200 <= ex.status < 300:
        return []
    return _ids(_json(ex)[0]) or []


def _ids(data: Any) -> list[str] | None:
    """Model ids of a /models answer (``data``, llama.cpp's ``models``, or a bare list); None if none."""
    items: Any = None
    if isinstance(data, dict):
        items = data.get("data") if isinstance(data.get("data"), list) else data.get("models")
    elif isinstance(data, list):
        items = data
    if not isinstance(items, list):
        return None
    ids = []
    for item in items:
        if isinstance(item, dict):
            name = item.get("id", item.get("model", item.get("name")))
            if isinstance(name, str) and name:
                ids.append(name)
    return ids or None


def _says_model(data: Any, error: str) -> bool:
    """The error names the model as the problem (OpenAI's model_not_found, vLLM's "The model `x` does not
    exist", Ollama's "model "x" not found", Azure's DeploymentNotFound, a 404 whose param is model)."""
    err = data.get("error") if isinstance(data, dict) else None
    fields = [data, err] if isinstance(err, dict) else [data]
    for f in fields:
        if not isinstance(f, dict):
            continue
        code = f.get("code")
        if isinstance(code, str) and code.lower() in _MODEL_CODES:
            return True
        if f.get("param") == "model":
            return True
    return bool(_MODEL_TEXT.search(error))


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        for value in (err.get("message") if isinstance(err, dict) else err, data.get("message"),
                      data.get("detail")):
            if isinstance(value, str) and value:
                return value
    return ""


def _json(ex: Exchange) -> tuple[Any, bool]:
    text = (ex.body_text or "").strip()
    if not text or ex.body_truncated:
        return None, ex.body_truncated  # a body cut at the byte cap is judged by the run, not here
    try:
        return json.loads(text), True
    except ValueError:
        return None, False


def _is_html(ex: Exchange) -> bool:
    if _json(ex)[1]:
        return False
    head = (ex.body_text or "").lstrip()[:64].lower()
    return (ex.content_type or "").startswith("text/html") or head.startswith(("<!doctype html", "<html"))


def _clean(text: str | None, limit: int) -> str:
    """Target-controlled text made safe for one console line: no control characters, bounded length."""
    out = "".join(ch if ch.isprintable() else " " for ch in (text or ""))
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 3] + "..."
