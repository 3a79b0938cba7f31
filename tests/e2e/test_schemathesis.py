"""Property-based requests from the server's own OpenAPI schema (schemathesis), over real HTTP: no 5xx, no hang,
and with strict types, no request that breaks the schema is served.

The engine's limits are kept small (sizes to 128, 4 images) so every valid request is cheap on a CPU; steps keep
their limit of 30, the default, so that a request leaving them out is valid. The examples and the time are
bounded."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from baton.config import EngineConfig, RequestLimits
from baton.server import ServerConfig
from tests.e2e.conftest import running_server

ENGINE = EngineConfig(models=("tiny-sd15",), device="cpu", limits=RequestLimits(max_size=128, max_steps=30,
                                                                                 max_images=4))
SERVER = ServerConfig(api_keys=("fuzz-key",), request_timeout_s=20.0)


@pytest.fixture(scope="module")
def fuzzed_server():
    with running_server(ENGINE, SERVER) as url:
        yield url


def test_no_input_makes_the_server_fail_or_hang(fuzzed_server):
    # schemathesis' own pytest plugin does not run under pytest 9; its strategies do, driven by hypothesis here
    schema = schemathesis.openapi.from_url(f"{fuzzed_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/v1/generate", "/v1/images/generations", "/v1/models"}
    seen: dict[str, set[int]] = {}
    for operation in operations:
        strategies = [operation.as_strategy(), *operation.get_strategies_from_examples()]

        @given(case=st.one_of(strategies))
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.headers = {**(case.headers or {}), "Authorization": "Bearer fuzz-key"}
            response = case.call(base_url=fuzzed_server, timeout=30)  # a hang fails here
            seen.setdefault(case.operation.path, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
            )
            if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()
    # the fuzzing reached the model (valid requests were generated) and the validation (invalid ones)
    for path in ("/v1/generate", "/v1/images/generations"):
        assert 200 in seen[path] and seen[path] & {400, 404}, seen


def test_requests_that_break_the_schema_are_refused_never_coerced(fuzzed_server):
    # negative cases: a string or a boolean where a number belongs, a missing prompt, an unknown field, ...
    schema = schemathesis.openapi.from_url(f"{fuzzed_server}/openapi.json")
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "POST":
            continue

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.headers = {**(case.headers or {}), "Authorization": "Bearer fuzz-key"}
            response = case.call(base_url=fuzzed_server, timeout=30)
            statuses.append(response.status_code)
            assert 400 <= response.status_code < 500, (
                f"{case.method} {case.path} {case.body!r} -> {response.status_code}: {response.text[:300]}"
            )

        check()
    assert statuses and set(statuses) <= {400, 404, 413, 415}, set(statuses)


def test_the_server_still_serves_after_fuzzing(fuzzed_server):
    ok = httpx.post(f"{fuzzed_server}/v1/generate", headers={"Authorization": "Bearer fuzz-key"}, timeout=60,
                    json={"prompt": "after the storm", "steps": 2, "width": 64, "height": 64})
    assert ok.status_code == 200
    assert httpx.get(f"{fuzzed_server}/readyz").json() == {"status": "ready", "pending": 0}
