"""Every bad input gets a 4xx with an OpenAI-style body that names the problem; the server keeps
serving. Readiness, API keys and the queue limit."""

import threading

import httpx
import openai
import pytest
from conftest import live_server

from introllm.server.config import ServerConfig

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def url(embedded):
    with live_server(ServerConfig(max_tokens=64, max_n=4, max_batch=8), checkpoint=embedded) as u:
        yield u


def _post(url, path, body=None, raw=None, headers=None):
    if raw is not None:
        return httpx.post(
            url + path, content=raw, headers={"Content-Type": "application/json", **(headers or {})}, timeout=60
        )
    return httpx.post(url + path, json=body, headers=headers, timeout=60)


BAD = [
    # (path, body or raw bytes, status, words the message must contain, param)
    ("/v1/completions", b"{not json", 400, "not valid JSON", None),
    ("/v1/completions", b"[1, 2]", 400, "must be a JSON object", None),
    ("/v1/completions", {"model": "gpt-9", "prompt": "hi"}, 404, "'gpt-9' does not exist", "model"),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt is empty", "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": []}, 400, "prompt is empty", "prompt"),
    ("/v1/completions", {"model": MODEL}, 400, "missing required field: prompt", "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi " * 9000}, 400, "context is 8192 tokens", "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": [10**9]}, 400, "outside the vocabulary", "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 65}, 400, "at most 64", "max_tokens"),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "max_tokens": 0},
        400,
        "greater than or equal to 1",
        "max_tokens",
    ),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "n": 5}, 400, "n is 5; this server allows at most 4", "n"),
    ("/v1/completions", {"model": MODEL, "prompt": ["a", "b", "c"], "n": 4}, 400, "exceeds the batch size 8", "n"),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "temperature": -0.5},
        400,
        "greater than or equal to 0",
        "temperature",
    ),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "temperature": 3},
        400,
        "less than or equal to 2",
        "temperature",
    ),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "policy": "warm"},
        400,
        "unknown temperature policy 'warm'",
        "policy",
    ),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "policy": "fixed:-2"}, 400, ">= 0", "policy"),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "policy": "learned", "temperature": 1},
        400,
        "either temperature",
        None,
    ),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "polcy": "learned"},
        400,
        "Unrecognized request argument supplied: polcy",
        "polcy",
    ),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "top_p": 0}, 400, "greater than 0", "top_p"),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]},
        400,
        "at most 4 stop",
        "stop",
    ),
    (
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "presence_penalty": 1.0},
        400,
        "presence_penalty is not supported",
        None,
    ),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "echo": True}, 400, "echo is not supported", None),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "at least 1 item", "messages"),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": ""}]},
        400,
        "messages are empty",
        "messages",
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]},
        400,
        "messages.0.role",
        "messages.0.role",
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
        400,
        "tools is not supported",
        None,
    ),
    (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100},
        400,
        "at most 64",
        "max_tokens",
    ),
    ("/v1/nowhere", {}, 404, "no route /v1/nowhere", None),
]


@pytest.mark.parametrize("path, body, status, words, param", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_clear_4xx(url, path, body, status, words, param):
    r = _post(url, path, raw=body) if isinstance(body, bytes) else _post(url, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"], err
    assert err["param"] == param
    assert err["type"] in ("invalid_request_error",)


def test_still_serves_after_bad_inputs(url):
    for path, body, *_ in BAD:
        _post(url, path, raw=body) if isinstance(body, bytes) else _post(url, path, body)
    r = _post(url, "/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_openai_client_raises_typed_errors(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="unknown temperature policy"):
        client.completions.create(model=MODEL, prompt="hi", extra_body={"policy": "warm"})
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi")


def test_api_key(embedded):
    with live_server(ServerConfig(api_key="s3cret"), checkpoint=embedded) as url:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
        for headers, status, words in [
            ({}, 401, "missing API key"),
            ({"Authorization": "Bearer wrong"}, 401, "incorrect API key"),
            ({"Authorization": "Basic s3cret"}, 401, "incorrect API key"),
        ]:
            r = _post(url, "/v1/completions", body, headers=headers)
            assert r.status_code == status and words in r.json()["error"]["message"]
        r = _post(url, "/v1/completions", raw=b"{bad", headers={})
        assert r.status_code == 401  # checked before the body is read
        assert httpx.get(url + "/health").status_code == 200  # health and metrics stay open
        client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_health_is_503_until_loaded_and_reports_load_failures(embedded):
    gate = threading.Event()

    def slow_loader():
        gate.wait(60)
        return embedded

    with live_server(ServerConfig(), loader=slow_loader, wait_ready=False) as url:
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = _post(url, "/v1/completions", {"model": MODEL, "prompt": "hi"})
        assert r.status_code == 503 and "still loading" in r.json()["error"]["message"]
        gate.set()
        for _ in range(100):
            if httpx.get(url + "/health").status_code == 200:
                break
            threading.Event().wait(0.1)
        assert httpx.get(url + "/health").status_code == 200

    def broken_loader():
        raise FileNotFoundError("no such checkpoint: /x")

    with live_server(ServerConfig(), loader=broken_loader, wait_ready=False) as url:
        for _ in range(50):
            r = httpx.get(url + "/health")
            if r.json()["status"] == "error":
                break
            threading.Event().wait(0.1)
        assert r.status_code == 503 and "no such checkpoint" in r.json()["message"]
        r = _post(url, "/v1/completions", {"model": MODEL, "prompt": "hi"})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]


async def _tokens_or_error(client, max_tokens, stop=None):
    """A seeded completion of "Tell me a story.": its completion tokens, or the 500's message."""
    try:
        r = await client.completions.create(
            model=MODEL,
            prompt="Tell me a story.",
            max_tokens=max_tokens,
            stop=stop,
            seed=1,
            extra_body={"ignore_eos": True},
        )
        return r.usage.completion_tokens
    except openai.InternalServerError as e:
        return str(e)


def test_a_failing_request_fails_alone_and_a_failing_step_does_not_kill_the_server(embedded, monkeypatch):
    import asyncio

    from introllm.server import scheduler

    original_push = scheduler._Text.push

    def push(self, token_id, final):  # a request whose text cannot be produced
        if "BOOM" in self.stop:
            raise RuntimeError("cannot decode")
        return original_push(self, token_id, final)

    monkeypatch.setattr(scheduler._Text, "push", push)
    with live_server(ServerConfig(), checkpoint=embedded) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

        async def together():
            return await asyncio.gather(*(_tokens_or_error(client, 12, stop) for stop in (None, ["BOOM"], None)))

        results = asyncio.run(together())
        assert results[0] == results[2] == 12
        assert "internal error while decoding the text" in results[1]

        # A decode step that raises fails the requests in it, and the server goes on serving.
        from introllm.sampler.batch import DecodeBatch

        original_step, calls = DecodeBatch.step, []

        def flaky_step(self, on_sampled=None):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("simulated kernel failure")
            return original_step(self, on_sampled)

        monkeypatch.setattr(DecodeBatch, "step", flaky_step)
        r = _post(url, "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "ignore_eos": True})
        assert r.status_code == 500 and "internal error while decoding: RuntimeError" in r.json()["error"]["message"]
        r = _post(url, "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "ignore_eos": True})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8


def test_a_forward_pass_that_fails_after_the_draw_still_delivers_what_was_drawn(embedded, monkeypatch):
    """Tokens are dispatched between the draw and the forward pass; when that forward pass fails, a
    request that finished in the same step still gets its tokens and its end (not a hang), and the
    one still running gets the error."""
    import asyncio

    from introllm.sampler.batch import DecodeBatch

    forward, seen = DecodeBatch._advance, {"rows": 0, "failed": False}

    def advance(self, tokens):  # fail once: in the step where one sequence finished and another goes on
        if not seen["failed"] and len(self.rows) < seen["rows"]:
            seen["failed"] = True
            raise RuntimeError("simulated kernel failure")
        seen["rows"] = len(self.rows)
        return forward(self, tokens)

    monkeypatch.setattr(DecodeBatch, "_advance", advance)
    with live_server(ServerConfig(), checkpoint=embedded) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)

        async def together():
            long = asyncio.create_task(_tokens_or_error(client, 24))
            await asyncio.sleep(0.1)  # the long one is decoding when the short one joins
            return await _tokens_or_error(client, 2), await long

        short, long = asyncio.run(together())
    assert seen["failed"]
    assert short == 2
    assert "internal error while decoding" in long
