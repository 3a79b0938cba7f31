"""The API takes exactly what its schema says (no coercion), names fields as the client sent them, and builds
image URLs from configuration, never from request headers."""

from __future__ import annotations

import httpx
import pytest

from baton.server import ServerConfig
from tests.e2e.conftest import running_server

FAST = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server():
    with running_server(config=ServerConfig(max_prompt_chars=5000)) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/images/generations", {"prompt": "x", "n": "2"}, "n"),
        ("/v1/images/generations", {"prompt": "x", "n": True}, "n"),
        ("/v1/images/generations", {"prompt": "x", "n": 1.0}, "n"),
        ("/v1/images/generations", {"prompt": "x", "size": " 64X64 "}, "size"),
        ("/v1/images/generations", {"prompt": "x", "size": "64X64"}, "size"),
        ("/v1/images/generations", {"prompt": "x", "size": "６４x６４"}, "size"),  # full-width digits
        ("/v1/images/generations", {"prompt": "x", "size": "64x64x64"}, "size"),
        ("/v1/images/generations", {"prompt": "x", "size": "1" * 5000 + "x64"}, "size"),
        ("/v1/images/generations", {"prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/images/generations", {"prompt": 5}, "prompt"),
        ("/v1/generate", {"prompt": "x", "seed": "7"}, "seed"),
        ("/v1/generate", {"prompt": "x", "steps": "2"}, "steps"),
        ("/v1/generate", {"prompt": "x", "stream": 1}, "stream"),
        ("/v1/generate", {"prompt": "x", "guidance_scale": "7.5"}, "guidance_scale"),
        ("/v1/generate", {"prompt": "x", "output_format": "np"}, "output_format"),
    ],
)
def test_no_type_is_coerced(server, path, body, param):
    response = httpx.post(f"{server}{path}", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and f"`{param}`" in error["message"]


def test_a_number_for_a_float_field_is_fine(server):
    response = httpx.post(f"{server}/v1/generate", json={"prompt": "x", "guidance_scale": 3, **FAST}, timeout=60)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"prompt": "x", "n": 99}, "n", "`n` must be an integer between 1 and 16, got 99"),
        ({"prompt": "x", "size": "4096x64"}, "size", "`size` (its width) must be a multiple of 8 between 64 and "
                                                     "512 (the limit of model 'tiny-sd15'), got 4096"),
        ({"prompt": "x", "size": "64x100"}, "size", "`size` (its height) must be a multiple of 8"),
    ],
)
def test_openai_errors_name_openai_fields(server, body, param, says):
    response = httpx.post(f"{server}/v1/images/generations", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["message"].startswith(says), error["message"]


def test_malformed_json_says_where(server):
    response = httpx.post(f"{server}/v1/generate", content=b'{\n  "prompt": "x",\n  "steps": 2,,\n}',
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] is None and error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"] and "line 3 column 14" in error["message"], error["message"]


def test_the_media_type_and_an_empty_body(server):
    form = httpx.post(f"{server}/v1/generate", data={"prompt": "x"})  # what `curl -d` sends
    assert form.status_code == 415 and "application/json" in form.json()["error"]["message"]
    text = httpx.post(f"{server}/v1/images/generations", content=b'{"prompt": "x"}',
                      headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    empty = httpx.post(f"{server}/v1/generate", content=b"", headers={"Content-Type": "application/json"})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    unnamed = httpx.post(f"{server}/v1/generate", content=b'{"prompt": "x"}')  # JSON, but no Content-Type
    assert unnamed.status_code == 415 and "none was sent" in unnamed.json()["error"]["message"]


def test_image_urls_never_come_from_request_headers(server):
    response = httpx.post(f"{server}/v1/generate", json={"prompt": "x", "response_format": "url", **FAST},
                          headers={"Host": "evil.example:9999", "X-Forwarded-Proto": "https",
                                   "X-Forwarded-Host": "evil.example"}, timeout=60)
    url = response.json()["images"][0]["url"]
    assert url.startswith("/v1/images/") and "evil" not in url
    assert httpx.head(server + url).status_code == 200
    assert httpx.head(server + url).headers["content-type"] == "image/png"
    assert httpx.head(f"{server}/").status_code == 200


def test_public_url_and_capability_urls():
    config = ServerConfig(api_keys=("k",), public_url="https://images.example.com/", capability_urls=True)
    with running_server(config=config) as url:
        auth = {"Authorization": "Bearer k"}
        response = httpx.post(f"{url}/v1/images/generations", headers=auth, timeout=60,
                              json={"prompt": "x", "size": "64x64", "response_format": "url"})
        image_url = response.json()["data"][0]["url"]
        assert image_url.startswith("https://images.example.com/v1/images/")
        path = image_url.removeprefix("https://images.example.com")
        assert httpx.get(url + path).status_code == 200  # no key: the URL itself is the credential
        assert httpx.get(f"{url}/v1/images/guessed.png").status_code == 404
        assert httpx.get(f"{url}/v1/models").status_code == 401  # everything else still needs the key


def test_401_names_the_scheme_and_unsupported_endpoints_are_404():
    with running_server(config=ServerConfig(api_keys=("k",))) as url:
        denied = httpx.get(f"{url}/v1/models")
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        image = httpx.get(f"{url}/v1/images/x.png")  # without capability URLs, images need the key
        assert image.status_code == 401
        for path in ("/v1/images/edits", "/v1/images/variations"):
            response = httpx.post(f"{url}{path}", headers={"Authorization": "Bearer k"}, json={})
            assert response.status_code == 404 and "not supported yet" in response.json()["error"]["message"]


def test_a_long_prompt_is_reported_not_silently_cut(server):
    words = " ".join(["red"] * 60)  # the tiny model reads bytes: 3 tokens a word, 75 of the 180
    response = httpx.post(f"{server}/v1/generate", json={"prompt": words, **FAST}, timeout=60)
    assert response.status_code == 200
    assert response.json()["warnings"] == [
        "`prompt` has 180 tokens; the text encoder read the first 75 and ignored the rest"]
    assert response.headers["x-baton-warnings"] == (
        "prompt has 180 tokens; the text encoder read the first 75 and ignored the rest")
    stream = httpx.post(f"{server}/v1/generate", json={"prompt": words, "stream": True, **FAST}, timeout=60)
    assert "x-baton-warnings" in stream.headers and '"warnings": ["`prompt` has 180 tokens' in stream.text
    openai = httpx.post(f"{server}/v1/images/generations", json={"prompt": words, "size": "64x64"}, timeout=60)
    assert openai.json()["warnings"] and "x-baton-warnings" in openai.headers
    short = httpx.post(f"{server}/v1/generate", json={"prompt": "red", **FAST}, timeout=60)
    assert short.json()["warnings"] == [] and "x-baton-warnings" not in short.headers


def test_models_advertise_their_own_limits_and_samplers(server):
    model = httpx.get(f"{server}/v1/models").json()["data"][0]
    assert model["max_size"] == 2 * model["default_size"] == 512
    assert "unipc" in model["schedulers"]  # on a CPU every sampler runs
    engine = httpx.get(f"{server}/v1/models").json()["engine"]
    assert "schedulers" not in engine  # samplers are per model: a model may refuse some


def test_the_schema_carries_the_engines_limits(server):
    schemas = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    native = schemas["GenerateRequest"]["properties"]
    assert list(native)[:3] == ["prompt", "negative_prompt", "num_images"]  # GenerationRequest's fields, in order
    steps = native["steps"]
    assert (steps["default"], steps["minimum"], steps["maximum"]) == (30, 1, 200)
    width = next(option for option in native["width"]["anyOf"] if option.get("type") == "integer")
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 512, 8)
    scheduler = native["scheduler"]
    assert "euler" in scheduler["enum"] and "magic" not in scheduler["enum"]
    assert schemas["ImageGenerationRequest"]["properties"]["n"]["maximum"] == 16
