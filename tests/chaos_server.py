"""A hostile, broken /chat/completions target for the chaos tests (issue 9).

``ChaosServer(behaviour, upstream=...)`` listens on a free port of 127.0.0.1 (raw sockets, one thread per
connection, ``Connection: close`` on every answer) and misbehaves in one chosen way. Requests the behaviour
does not touch (its *scope*: every request, or only stream requests) are relayed to ``upstream`` (the
embedded reference server), so that whatever the suite finds broken is what the behaviour broke.

Nothing here holds a large body in memory: the 100 MB body and the endless streams are generated lazily.
The server never records the API key: only whether an Authorization header arrived (``auth_seen``).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["BEHAVIOURS", "HOSTILE", "ChaosServer", "RecordingServer", "self_signed_cert"]

# target-controlled text that must never reach a report unescaped or a terminal raw
HOSTILE = "<script>alert('chaos')</script>\x1b[31mRED\x1b[0m\x1b]0;pwned\x07"

# name -> (scope, description); scope "all": every request, "stream": requests with "stream": true
BEHAVIOURS: dict[str, tuple[str, str]] = {
    "never-answer": ("all", "accepts the connection, reads the request, never answers"),
    "stall-after-headers": ("stream", "sends 200 text/event-stream headers, then nothing"),
    "trickle": ("stream", "sends the answer one byte per second, status line and headers included"),
    "stream-forever": ("stream", "valid SSE chunks every 5 ms, never [DONE], never the end"),
    "huge-body": ("all", "a 100 MB 200 application/json body (generated lazily)"),
    "invalid-utf8": ("all", "the answer's content carries bytes that are not UTF-8"),
    "text-200": ("all", "200 text/plain that is not JSON"),
    "html-200": ("all", "200 text/html page"),
    "html-502": ("all", "502 Bad Gateway HTML page"),
    "reset-mid-stream": ("stream", "half of the stream, then a TCP reset"),
    "no-done": ("stream", "the stream without data: [DONE], closed cleanly"),
    "huge-event": ("stream", "one SSE event of 2 MB (over the 1 MB event cap)"),
    "redirect": ("all", "307 to another host that records whether Authorization reached it"),
    "tls-self-signed": ("all", "HTTPS with a self-signed certificate (otherwise correct answers)"),
    "flood-429": ("all", "429 with a huge Retry-After on every request"),
    "flood-429-after-preflight": ("after-first", "429 with a huge Retry-After after the first request"),
    "script-ansi": ("all", "<script> and ANSI escapes in content and error messages"),
    "slow": ("all", "correct answers, each after 0.5 s (for the Ctrl-C test)"),
}

_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_HUGE = 100 * 1024 * 1024


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    @property
    def stream(self) -> bool:
        j = self.json
        return isinstance(j, dict) and j.get("stream") is True


def _read_request(conn: socket.socket) -> _Request | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        part = conn.recv(65536)
        if not part:
            return None
        buf += part
        if len(buf) > 1 << 20:
            return None
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        part = conn.recv(65536)
        if not part:
            break
        rest += part
    return _Request(method, path, headers, rest[:length])


def _head(status: int, reason: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _response(status: int, reason: str, content_type: str, body: bytes, **extra: str) -> bytes:
    headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **extra}
    return _head(status, reason, headers) + body


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _chunk(model: str, content: str) -> bytes:
    obj = {
        "id": "chatcmpl-chaos",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) of a fresh self-signed certificate for 127.0.0.1 (cryptography, else openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        return cert, key
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chaos.invalid")])
    now = dt.datetime.now(dt.UTC)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(pk, hashes.SHA256())
    )
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pk.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


class _Listener:
    """Accept loop on a free port; ``handle(conn)`` runs in a daemon thread per connection."""

    def __init__(self, host: str, tls: ssl.SSLContext | None = None) -> None:
        self.stop_event = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.host, self.port = host, self._sock.getsockname()[1]
        self._tls = tls
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"chaos-{self.port}", daemon=True)
        self._thread.start()

    def handle(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.append(conn)
        try:
            conn.settimeout(30)
            if self._tls is not None:
                try:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate: that is the point
            self.handle(conn)
        except OSError:
            pass  # the client hung up on us (byte caps, deadlines): expected
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.stop_event.set()
        self._sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(2)


class RecordingServer(_Listener):
    """The 'other host' of a redirect: answers 200 and records whether Authorization reached it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.auth_seen: list[bool] = []
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        req = _read_request(conn)
        if req is None:
            return
        self.auth_seen.append("authorization" in req.headers)
        conn.sendall(_response(200, "OK", "application/json", b'{"stolen": false}'))


class ChaosServer(_Listener):
    """One misbehaving target. ``base_url`` is ``http(s)://127.0.0.1:PORT/v1``."""

    def __init__(
        self,
        behaviour: str,
        *,
        upstream: str,
        model: str,
        tls_dir: Path | None = None,
        redirect_to: str | None = None,
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        self.behaviour = behaviour
        self.scope = BEHAVIOURS[behaviour][0]
        self.upstream = upstream.rstrip("/")
        self.model = model
        self.redirect_to = redirect_to
        self.requests = 0
        self.auth_seen: list[bool] = []
        self._count_lock = threading.Lock()
        self._http = httpx.Client(timeout=10.0)
        tls = None
        if behaviour == "tls-self-signed":
            if tls_dir is None:
                raise ValueError("tls-self-signed needs tls_dir for its certificate")
            cert, key = self_signed_cert(tls_dir)
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cert, key)
        super().__init__("127.0.0.1", tls)
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        super().stop()
        self._http.close()

    # ---- relaying to the reference server ------------------------------------------------------------
    def _relay(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in req.headers.items() if k in ("authorization", "content-type")}
        path = req.path.removeprefix("/v1")
        r = self._http.request(req.method, self.upstream + path, headers=headers, content=req.body)
        keep = {"Content-Type": r.headers.get("content-type", "application/json")}
        return r.status_code, keep, r.content

    def _relay_bytes(self, req: _Request) -> bytes:
        status, headers, body = self._relay(req)
        headers["Content-Length"] = str(len(body))
        return _head(status, "Whatever", headers) + body

    # ---- behaviour ---------------------------------------------------------------------------------
    def handle(self, conn: socket.socket) -> None:
        req = _read_request(conn)
        if req is None:
            return
        with self._count_lock:
            self.requests += 1
            n = self.requests
        self.auth_seen.append("authorization" in req.headers)
        hit = (
            self.scope == "all"
            or (self.scope == "stream" and req.stream)
            or (self.scope == "after-first" and n > 1)
        )
        if not hit:
            conn.sendall(self._relay_bytes(req))
            return
        getattr(self, "_" + self.behaviour.replace("-", "_"))(conn, req)

    def _wait(self) -> None:
        self.stop_event.wait()

    def _never_answer(self, conn: socket.socket, req: _Request) -> None:
        self._wait()

    def _stall_after_headers(self, conn: socket.socket, req: _Request) -> None:
        conn.sendall(_head(200, "OK", {"Content-Type": "text/event-stream"}))
        self._wait()

    def _trickle(self, conn: socket.socket, req: _Request) -> None:
        data = self._relay_bytes(req)
        for i in range(len(data)):
            if self.stop_event.wait(1.0):
                return
            conn.sendall(data[i : i + 1])

    def _stream_forever(self, conn: socket.socket, req: _Request) -> None:
        conn.sendall(_head(200, "OK", {"Content-Type": "text/event-stream"}))
        chunk = _chunk(self.model, "more ")
        while not self.stop_event.is_set():
            conn.sendall(chunk)
            time.sleep(0.005)

    def _huge_body(self, conn: socket.socket, req: _Request) -> None:
        head = (
            b'{"id":"chatcmpl-chaos","object":"chat.completion",'
            b'"choices":[{"index":0,"message":{"role":"assistant","content":"'
        )
        tail = b'"},"finish_reason":"stop"}]}'
        filler = b"A" * 65536
        conn.sendall(_head(200, "OK", {"Content-Type": "application/json", "Content-Length": str(_HUGE)}))
        conn.sendall(head)
        left = _HUGE - len(head) - len(tail)
        while left > 0 and not self.stop_event.is_set():
            piece = filler[: min(left, len(filler))]
            conn.sendall(piece)
            left -= len(piece)
        conn.sendall(tail)

    def _slow(self, conn: socket.socket, req: _Request) -> None:
        if not self.stop_event.wait(0.5):
            conn.sendall(self._relay_bytes(req))

    def _invalid_utf8(self, conn: socket.socket, req: _Request) -> None:
        if req.method != "POST":
            conn.sendall(self._relay_bytes(req))
            return
        status, headers, body = self._relay(req)
        bad = b"caf\xe9 \xff\xfe \xc3\x28 \xed\xa0\x80"  # latin-1, invalid bytes, bad continuation, surrogate
        if req.stream:
            body = body.replace(b'"content": "', b'"content": "' + bad, 1).replace(
                b'"content":"', b'"content":"' + bad, 1
            )
        else:
            try:
                obj = json.loads(body)
                obj["choices"][0]["message"]["content"] = "@@BAD@@"
                body = json.dumps(obj).encode().replace(b"@@BAD@@", bad)
            except (ValueError, KeyError, IndexError, TypeError):
                body = bad + body
        headers["Content-Length"] = str(len(body))
        conn.sendall(_head(status, "OK", headers) + body)

    def _text_200(self, conn: socket.socket, req: _Request) -> None:
        conn.sendall(_response(200, "OK", "text/plain", b"Sure! Here is your completion: hello.\n"))

    def _html_200(self, conn: socket.socket, req: _Request) -> None:
        page = b"<!doctype html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body>"
        conn.sendall(_response(200, "OK", "text/html; charset=utf-8", page))

    def _html_502(self, conn: socket.socket, req: _Request) -> None:
        conn.sendall(_response(502, "Bad Gateway", "text/html", _HTML_502))

    def _reset_mid_stream(self, conn: socket.socket, req: _Request) -> None:
        status, headers, body = self._relay(req)
        conn.sendall(_head(status, "OK", headers))
        conn.sendall(body[: len(body) // 2])
        time.sleep(0.05)
        _reset(conn)

    def _no_done(self, conn: socket.socket, req: _Request) -> None:
        status, headers, body = self._relay(req)
        body = body.replace(b"data: [DONE]\n\n", b"").replace(b"data: [DONE]\r\n\r\n", b"")
        headers["Content-Length"] = str(len(body))
        conn.sendall(_head(status, "OK", headers) + body)

    def _huge_event(self, conn: socket.socket, req: _Request) -> None:
        conn.sendall(_head(200, "OK", {"Content-Type": "text/event-stream"}))
        conn.sendall(_chunk(self.model, "a"))
        conn.sendall(b'data: {"padding": "')
        piece = b"B" * 65536
        for _ in range(32):  # 2 MB in one event
            conn.sendall(piece)
        conn.sendall(b'"}\n\n')
        conn.sendall(b"data: [DONE]\n\n")

    def _redirect(self, conn: socket.socket, req: _Request) -> None:
        location = (self.redirect_to or "http://chaos.invalid/v1").rstrip("/") + req.path.removeprefix("/v1")
        conn.sendall(_response(307, "Temporary Redirect", "text/plain", b"moved", Location=location))

    def _tls_self_signed(self, conn: socket.socket, req: _Request) -> None:
        conn.sendall(self._relay_bytes(req))

    def _flood_429(self, conn: socket.socket, req: _Request) -> None:
        body = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_error"}}).encode()
        huge = {"Retry-After": "99999999"}
        conn.sendall(_response(429, "Too Many Requests", "application/json", body, **huge))

    _flood_429_after_preflight = _flood_429

    def _script_ansi(self, conn: socket.socket, req: _Request) -> None:
        j = req.json
        if isinstance(j, dict) and j.get("tools"):  # discovery: tools refused with a hostile reason
            body = json.dumps(
                {"error": {"message": f"tools? {HOSTILE}", "type": "invalid_request_error"}},
                ensure_ascii=False,
            ).encode()
            conn.sendall(_response(400, "Bad Request", "application/json", body))
            return
        status, headers, raw = self._relay(req)
        if req.stream:
            out = []
            for line in raw.split(b"\n"):
                if line.startswith(b"data: {"):
                    try:
                        obj = json.loads(line[6:])
                        for ch in obj.get("choices") or []:
                            if (ch.get("delta") or {}).get("content"):
                                ch["delta"]["content"] = HOSTILE
                        line = b"data: " + json.dumps(obj, ensure_ascii=False).encode()
                    except ValueError:
                        pass
                out.append(line)
            raw = b"\n".join(out)
        else:
            try:
                obj = json.loads(raw)
                if isinstance(obj.get("error"), dict):
                    obj["error"]["message"] = f"{obj['error'].get('message')} {HOSTILE}"
                for ch in obj.get("choices") or []:
                    if isinstance(ch.get("message"), dict):
                        ch["message"]["content"] = HOSTILE
                obj["model"] = HOSTILE  # CORE-MODEL-MATCHES breaks, with hostile text as evidence
                raw = json.dumps(obj, ensure_ascii=False).encode()
            except (ValueError, AttributeError):
                pass
        headers["Content-Length"] = str(len(raw))
        conn.sendall(_head(status, "OK", headers) + raw)
