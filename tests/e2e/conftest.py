"""A real uvicorn on 127.0.0.1 serving the app, in a thread, for HTTP tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from baton.config import EngineConfig
from baton.server import ServerConfig, create_app
from baton.server.run import BatonServer


@contextlib.contextmanager
def running_server(engine_config: EngineConfig | None = None, config: ServerConfig | None = None,
                   wait_ready: bool = True, handle: dict | None = None, **create_kwargs) -> Iterator[str]:
    """Serve the app on a free loopback port; yields its base URL. Stops (and closes the engine) on exit.
    ``handle``, when given, receives the uvicorn server as ``handle["server"]``."""
    engine_config = engine_config or EngineConfig(models=("tiny-sd15",), device="cpu")
    app = create_app(engine_config, config, **create_kwargs)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = BatonServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    if handle is not None:
        handle["server"] = server
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    if wait_ready:
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the engine did not get ready"
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(60)
