"""``baton serve`` as users run it: a process on a port, ready once loaded, draining in-flight work on SIGTERM."""

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_with_a_key_file_and_drains_in_flight_requests_on_sigterm(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# the team's key\nkey-one\n")
    port = free_port()
    baton = Path(sys.executable).parent / "baton"
    process = subprocess.Popen([str(baton), "serve", "--port", str(port), "--api-key-file", str(keys)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "baton serve did not get ready"
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        auth = {"Authorization": "Bearer key-one"}
        assert httpx.get(f"{url}/v1/models").status_code == 401
        in_flight: dict = {}

        def slow_request() -> None:
            in_flight["response"] = httpx.post(f"{url}/v1/generate", headers=auth, timeout=120,
                                               json={"prompt": "slow", "steps": 60, "width": 128, "height": 128})

        sender = threading.Thread(target=slow_request)
        sender.start()
        while httpx.get(f"{url}/readyz").json().get("pending", 0) == 0:  # admitted
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        sender.join(120)
        assert in_flight["response"].status_code == 200  # finished, not dropped
        # uvicorn re-raises the signal once it has shut down gracefully: the exit status says "terminated"
        assert process.wait(60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read()
    assert f"baton serving shapes at http://127.0.0.1:{port} (API keys required)" in output
    assert "ready: shapes loaded and warmed" in output
    assert "Application shutdown complete" in output  # the engine closed after the in-flight request
