"""The bounded drain and the watchdog, on a real ``baton serve`` process whose steps are slowed or hung for one
image size (``SLOWED_SERVE``): 96x96 requests are the slow ones, 64x64 (the shapes model's own) run as usual."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx

from baton.server.run import ABORT_TIMEOUT_S, CLOSE_CONNECTIONS_S, HARD_EXIT_AFTER_DRAIN_S
from tests.e2e.conftest import serve_process

SLOW = {"prompt": "one small red circle", "width": 96, "height": 96, "steps": 2}
FAST = {"prompt": "one small blue square", "width": 64, "height": 64, "steps": 2}


def wait_for(check, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def admitted(url: str) -> bool:
    return httpx.get(f"{url}/v1/stats").json()["pending"] > 0


def exits_within(process, seconds: float) -> float:
    """How long the process took to exit after now; fails past ``seconds``."""
    start = time.monotonic()
    process.wait(seconds)
    return time.monotonic() - start


def test_a_slow_step_turns_readiness_red_others_are_answered_and_sigterm_lets_it_finish():
    # every 96x96 step takes 2.5 s, 1.5 s past --stuck-after 1 each: the watchdog's case, deterministic
    with serve_process("--stuck-after", "1", "--drain-timeout", "20", slow_side=96, slow_s=2.5) as server, \
            ThreadPoolExecutor(2) as pool:
        url = server.url
        slow = pool.submit(httpx.post, f"{url}/v1/generate", json=SLOW, timeout=60)
        # 1. readiness goes red while a step takes longer than --stuck-after (the watchdog)
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, 10, "/readyz stayed 200 through a slow step")
        assert httpx.get(f"{url}/healthz").status_code == 200  # slow is not dead: no restart
        # 2. another client meanwhile is refused or served, within its own timeout
        other = httpx.post(f"{url}/v1/generate", json=FAST, timeout=30)
        assert other.status_code in (200, 429, 503)
        # 3. once the steps are done, green again
        assert slow.result().status_code == 200
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 10, "/readyz did not turn green again")
        # 4. SIGTERM while a slow request runs: it finishes (well within the drain timeout), then the process exits
        in_flight = pool.submit(httpx.post, f"{url}/v1/generate", json=SLOW, timeout=60)
        wait_for(lambda: admitted(url), 10, "the request was not admitted")
        server.process.send_signal(signal.SIGTERM)
        assert in_flight.result().status_code == 200
        assert exits_within(server.process, 20 + 5) < 20
    assert server.process.returncode == -signal.SIGTERM  # uvicorn re-raises the signal once shut down
    assert "Application shutdown complete" in server.output


def test_while_draining_the_listener_answers_503_with_retry_after_and_readiness_is_red():
    with serve_process("--drain-timeout", "20", slow_side=96, slow_s=2.0) as server, ThreadPoolExecutor(1) as pool:
        url = server.url
        in_flight = pool.submit(httpx.post, f"{url}/v1/generate", json=SLOW, timeout=60)
        wait_for(lambda: admitted(url), 10, "the request was not admitted")
        server.process.send_signal(signal.SIGTERM)
        # Python runs the handler on the server's main thread when its loop next wakes; new connections are still
        # accepted all along
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 503, 10, "/readyz stayed 200")
        assert httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "draining"
        refused = httpx.post(f"{url}/v1/generate", json=FAST, timeout=10)  # told to come back later, elsewhere
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "not_ready" and refused.headers["connection"] == "close"
        assert server.process.poll() is None  # still draining: the request in flight holds it
        assert in_flight.result().status_code == 200
        exits_within(server.process, 20)
    assert "draining: new work gets 503" in server.output


@contextmanager
def draining_with_a_hung_request(drain_timeout_s: int):
    """A server whose one request hangs in its step (it never returns), sent SIGTERM once that request was
    admitted: yields the server and the hung request's future."""
    with serve_process("--drain-timeout", str(drain_timeout_s), slow_side=96, slow_s=-1) as server, \
            ThreadPoolExecutor(1) as pool:
        hung = pool.submit(httpx.post, f"{server.url}/v1/generate", json=SLOW, timeout=60)
        wait_for(lambda: admitted(server.url), 10, "the request was not admitted")
        server.process.send_signal(signal.SIGTERM)
        yield server, hung


def test_a_hung_step_is_failed_after_the_drain_timeout_and_its_client_gets_an_error():
    with draining_with_a_hung_request(2) as (server, hung):
        # 2 s of drain, ABORT_TIMEOUT_S for the workers to stop (they don't: the step never returns), the shutdown
        took = exits_within(server.process, 2 + ABORT_TIMEOUT_S + CLOSE_CONNECTIONS_S + 3)
        response = hung.result()  # an answer, not a dropped connection
        assert response.status_code in (500, 503), response.text
        assert response.json()["error"]["message"]
    assert 2 + ABORT_TIMEOUT_S <= took < 2 + ABORT_TIMEOUT_S + 3, took
    assert "drain ended (timeout) with 1 request(s) in flight: failing them" in server.output


def test_a_second_signal_ends_the_drain_at_once():
    with draining_with_a_hung_request(60) as (server, hung):
        time.sleep(0.5)
        assert server.process.poll() is None  # a 60 s drain
        server.process.send_signal(signal.SIGTERM)
        exits_within(server.process, ABORT_TIMEOUT_S + CLOSE_CONNECTIONS_S + 3)  # not 60 s
        assert hung.result().status_code in (500, 503)
    assert "drain ended (second signal)" in server.output


def test_the_last_resort_ends_a_process_whose_shutdown_hangs():
    with serve_process("--drain-timeout", "1", hang_close=True) as server:
        server.process.send_signal(signal.SIGTERM)
        took = exits_within(server.process, 1 + HARD_EXIT_AFTER_DRAIN_S + 3)
    assert server.process.returncode == -signal.SIGALRM  # the kernel's doing: nothing in Python had to run
    assert took >= 1 + HARD_EXIT_AFTER_DRAIN_S - 0.5, took
