"""``baton serve`` as users run it: the installed script, a process on a port, ready once loaded, draining
in-flight work on SIGTERM, quiet on the terminal, and refusing in one line what it cannot do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import QUIETING_ENV, serve_process


def test_serve_answers_with_a_key_file_and_drains_in_flight_requests_on_sigterm(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# the team's key\nkey-one\n")
    with serve_process("--api-key-file", str(keys), installed=True) as server:
        url = server.url
        auth = {"Authorization": "Bearer key-one"}
        assert httpx.get(f"{url}/v1/models").status_code == 401
        in_flight: dict = {}

        def slow_request() -> None:
            in_flight["response"] = httpx.post(f"{url}/v1/generate", headers=auth, timeout=120,
                                               json={"prompt": "slow", "steps": 60, "width": 128, "height": 128})

        sender = threading.Thread(target=slow_request)
        sender.start()
        while httpx.get(f"{url}/v1/stats", headers=auth).json()["pending"] == 0:  # admitted
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        sender.join(120)
        assert in_flight["response"].status_code == 200  # finished, not dropped
        # uvicorn re-raises the signal once it has shut down gracefully: the exit status says "terminated"
        assert server.process.wait(60) == -signal.SIGTERM
    output = server.output
    # the banner, printed once the port was bound, with the port the system chose for --port 0
    assert f"baton serving shapes at {url} (API keys required)" in output
    assert "ready: shapes loaded and warmed" in output
    assert "Application shutdown complete" in output  # the engine closed after the in-flight request
    # quiet: no library notices, deprecation warnings or loading progress bars
    for noise in ("[transformers]", "Warning", "Loading pipeline components", "Loading weights", "it/s"):
        assert noise not in output, output


def test_serve_on_a_busy_port_says_so_in_one_line_and_exits_2():
    env = {name: value for name, value in os.environ.items() if name not in QUIETING_ENV}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(Path(sys.executable).parent / "baton"), "serve", "--port", str(port)],
                              capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 2
    expected = f"baton serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert done.stderr.splitlines() == [expected]
    assert "serving" not in done.stdout
