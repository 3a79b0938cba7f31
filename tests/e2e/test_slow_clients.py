"""Slow and stalled clients, with raw sockets: the header deadline, the body deadline (408) and the keep-alive
limit close what trickles or idles, while requests that are only slow to compute are untouched."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from baton.config import EngineConfig
from baton.server import ServerConfig
from tests.e2e.conftest import running_server
from tests.e2e.test_streaming_and_metrics import metric

TIMEOUT_S = 1.0
SLACK_S = 1.5  # timers fire on the server's loop; a busy 2-core machine delays them a little
CONFIG = ServerConfig(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S, keep_alive_s=TIMEOUT_S)


@pytest.fixture(scope="module")
def url():
    with running_server(EngineConfig(models=("shapes",), device="cpu"), CONFIG) as base_url:
        yield base_url


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds that took."""
    start = time.monotonic()
    sock.settimeout(within_s)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
        sock.settimeout(max(0.01, within_s - (time.monotonic() - start)))
    return received, time.monotonic() - start


def test_half_the_headers_then_nothing_is_disconnected_after_the_header_timeout(url):
    with connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: baton\r\n")  # no blank line: the headers never end
        received, took = read_until_closed(sock, TIMEOUT_S + SLACK_S)
    assert received == b"" and took >= TIMEOUT_S - 0.2, took


def test_a_client_trickling_its_headers_is_disconnected_too(url):
    # a byte every 0.2 s: each one would restart a mere idle timer, never this deadline
    request = b"GET /healthz HTTP/1.1\r\nHost: baton\r\nX-Slow: " + b"a" * 200
    start = time.monotonic()
    with connect(url) as sock:
        sock.settimeout(0.2)
        closed = False
        for byte in request:
            try:
                sock.send(bytes([byte]))
                closed = sock.recv(1) == b""
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed or time.monotonic() - start > TIMEOUT_S + SLACK_S:
                break
    assert closed and time.monotonic() - start <= TIMEOUT_S + SLACK_S


def test_a_stalled_body_gets_408_and_the_connection_closes(url):
    with connect(url) as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n" + b'{"prompt":')  # 10 of 100 bytes, then nothing
        received, took = read_until_closed(sock, TIMEOUT_S + SLACK_S)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == {
        "message": "the request body did not arrive within 1 s", "type": "invalid_request_error",
        "param": None, "code": "body_timeout"}
    assert took <= TIMEOUT_S + SLACK_S
    assert metric(url, "baton_requests_total", endpoint="/v1/generate", status="408") >= 1


def test_a_body_trickled_a_byte_at_a_time_gets_408_too(url):
    # each byte well within the deadline of the one before: only a whole-body deadline ends this
    start = time.monotonic()
    with connect(url) as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n")
        sock.settimeout(0.3)
        received = b""
        for _ in range(100):
            try:
                sock.send(b" ")
                received += sock.recv(65536)
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            if received or time.monotonic() - start > TIMEOUT_S + SLACK_S:
                break
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert time.monotonic() - start <= TIMEOUT_S + SLACK_S


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive():
    # a header deadline far longer than the keep-alive limit: only the latter can close this idle connection
    config = ServerConfig(header_timeout_s=30, keep_alive_s=TIMEOUT_S)
    with running_server(EngineConfig(models=("shapes",), device="cpu"), config) as url, connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: baton\r\n\r\n")
        sock.settimeout(10)
        response = b""
        while b'"status"' not in response:  # the whole (small) answer
            response += sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 200 ")
        received, took = read_until_closed(sock, TIMEOUT_S + SLACK_S)  # and then: idle
    assert received == b"" and took >= TIMEOUT_S - 0.2, took


def test_requests_slower_than_every_timeout_still_work(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/healthz").status_code == 200
        slow = {"prompt": "one large red circle", "steps": 60, "width": 128, "height": 128, "seed": 1}
        # computing for longer than the header and body deadlines closes nothing: they are for the client's part
        for body in (slow, {**slow, "stream": True}):
            started = time.monotonic()
            answer = client.post("/v1/generate", json=body)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started > TIMEOUT_S  # or this test proves nothing
        assert "event: result" in answer.text
        assert client.get("/healthz").status_code == 200  # the same keep-alive connection, still open
