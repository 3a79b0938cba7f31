"""A real uvicorn on 127.0.0.1 serving the app, in a thread, for HTTP tests: the server ``baton serve`` runs
(``build_server``), on a socket bound first, so no other process can take the port in between."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from baton.config import EngineConfig
from baton.server import ServerConfig, create_app
from baton.server.run import bind_socket, build_server


@contextlib.contextmanager
def running_server(engine_config: EngineConfig | None = None, config: ServerConfig | None = None,
                   wait_ready: bool = True, handle: dict | None = None, **create_kwargs) -> Iterator[str]:
    """Serve the app on a free loopback port; yields its base URL. Stops (and closes the engine) on exit.
    ``handle``, when given, receives the uvicorn server as ``handle["server"]``."""
    engine_config = engine_config or EngineConfig(models=("tiny-sd15",), device="cpu")
    app = create_app(engine_config, config, **create_kwargs)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_server(app, log_level="warning")
    if handle is not None:
        handle["server"] = server
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
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


SLOWED_SERVE = """
import os, sys, time

from baton.models.runner import ModelRunner

side, seconds = int(os.environ["BATON_TEST_SLOW_SIDE"]), float(os.environ["BATON_TEST_SLOW_S"])
eager_denoiser = ModelRunner.eager_denoiser


def slowed(self, latents, *args):
    if latents.shape[-1] * self.vae_scale_factor == side:
        while seconds < 0:  # hung for good
            time.sleep(3600)
        time.sleep(seconds)
    return eager_denoiser(self, latents, *args)


ModelRunner.eager_denoiser = slowed
if os.environ.get("BATON_TEST_HANG_CLOSE"):
    from baton.engine import Engine

    Engine.close = lambda self, *args, **kwargs: time.sleep(3600)
from baton.cli import main

sys.exit(main(sys.argv[1:]))
"""
"""``python -c`` code that runs ``baton <argv>`` with each denoising step of an image whose width is
``$BATON_TEST_SLOW_SIDE`` made ``$BATON_TEST_SLOW_S`` seconds slower (negative: hung for good). Every other size
runs as usual, so a test picks per request which one is slow: production code carries no test hooks. With
``$BATON_TEST_HANG_CLOSE`` set, closing the engine never returns."""


QUIETING_ENV = ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


@dataclasses.dataclass
class ServeProcess:
    """A ``baton serve`` process: its URL and its output (stdout and stderr, merged) so far."""

    process: subprocess.Popen
    url: str
    lines: list[str]

    @property
    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def serve_process(*args: str, slow_side: int | None = None, slow_s: float = 0.0, hang_close: bool = False,
                  installed: bool = False, wait_ready: bool = True) -> Iterator[ServeProcess]:
    """``baton serve --port 0 <args>`` in a process of its own (see ``SLOWED_SERVE``; ``installed``: the
    ``baton`` script itself, in the environment a user's shell has); yields once it has printed its URL (and,
    with ``wait_ready``, once ``/readyz`` is 200). Killed on exit if it is still running."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if installed:
        command = [str(Path(sys.executable).parent / "baton")]
        for name in QUIETING_ENV:  # set by tests/conftest.py: the quiet must come from baton itself
            env.pop(name, None)
    else:
        command = [sys.executable, "-c", SLOWED_SERVE]
        env.update(BATON_TEST_SLOW_SIDE=str(slow_side or 0), BATON_TEST_SLOW_S=str(slow_s),
                   BATON_TEST_HANG_CLOSE="1" if hang_close else "")
    process = subprocess.Popen([*command, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=_collect, args=(process.stdout, lines), daemon=True).start()  # reads never block a test
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            assert process.poll() is None and time.monotonic() < deadline, f"no URL printed:\n{''.join(lines)}"
            found = re.search(r"at (http://127\.0\.0\.1:\d+) ", "".join(lines))
            url = found[1] if found else None
            time.sleep(0.05)
        while wait_ready and httpx.get(f"{url}/readyz").status_code != 200:
            assert process.poll() is None and time.monotonic() < deadline, f"not ready:\n{''.join(lines)}"
            time.sleep(0.05)
        yield ServeProcess(process, url, lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)
