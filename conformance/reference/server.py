"""Run the reference server in a background thread (tests, ``cli run``) or the foreground (``cli serve``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterable

import uvicorn

from conformance.reference.app import create_app

__all__ = ["RunningServer", "start_in_thread", "serve_forever", "listen_socket", "DEFAULT_MODEL"]

DEFAULT_MODEL = "reference-tiny"


class _ThreadServer(uvicorn.Server):
    """uvicorn in a thread that stops as soon as asked: uvicorn's own loop looks at ``should_exit`` every
    0.1 s, which was a third of a small run in a warm process (a kill-matrix row)."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            try:  # the same tick as uvicorn's, cut short by stop()
                await asyncio.wait_for(self._wake.wait(), 0.1)
            except TimeoutError:
                pass

    def stop_soon(self) -> None:
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop has closed: the server is stopping already
                pass


class RunningServer:
    """A reference server answering on ``base_url`` (``http://HOST:PORT/v1``) until :meth:`stop`."""

    def __init__(
        self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int, model: str
    ) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.model = model
        self.base_url = f"http://{host}:{port}/v1"

    def stop(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop serving; ``wait``: until the server's thread has ended (at most ``timeout`` s), else return
        at once (it closes its listener at once, then gives open connections uvicorn's fixed 0.1 s)."""
        if isinstance(self._server, _ThreadServer):
            self._server.stop_soon()
        else:
            self._server.should_exit = True
        if wait:
            self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_in_thread(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    faults: Iterable[str] = (),
    profile: str = "seed",
    latency_s: float = 0.0,
    model_name: str = DEFAULT_MODEL,
    context_length: int = 256,
    startup_timeout: float = 10.0,
    variants: Iterable[str] = (),
    ttft_s: float = 0.0,
    tps: float | None = None,
) -> RunningServer:
    """Start uvicorn in a daemon thread on a free port (``port=0``) and wait until it accepts connections."""
    app = create_app(
        api_key=api_key,
        faults=faults,
        profile=profile,
        model_name=model_name,
        context_length=context_length,
        latency_s=latency_s,
        variants=variants,
        ttft_s=ttft_s,
        tps=tps,
    )
    if port == 0:
        port = _free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, name=f"reference-server-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if server.started:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return RunningServer(server, thread, host, port, model_name)
            except OSError:
                pass
        if not thread.is_alive():
            break
        time.sleep(0.02)
    server.should_exit = True
    raise RuntimeError(f"the reference server did not start on {host}:{port}")


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``port=0``: any free port) and listening; raises ``OSError``
    (``errno.EADDRINUSE`` when the port is taken) before anything is served."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free, a listener not
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    faults: Iterable[str] = (),
    profile: str = "seed",
    variants: Iterable[str] = (),
    *,
    context_length: int = 256,
    model_name: str = DEFAULT_MODEL,
    sock: socket.socket | None = None,
    ttft_s: float = 0.0,
    tps: float | None = None,
) -> None:
    """Serve in the foreground until interrupted (the CLI's ``serve`` command), on ``sock`` when given
    (see :func:`listen_socket`), else on ``host:port``."""
    app = create_app(
        api_key=api_key,
        faults=faults,
        profile=profile,
        variants=variants,
        context_length=context_length,
        model_name=model_name,
        ttft_s=ttft_s,
        tps=tps,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
