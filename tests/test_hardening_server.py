"""Issue 26, the server: one request never hurts another. Hostile and careless requests against a
real uvicorn server over a socket, run with the connection limits ``introllm serve`` uses
(``server.connections.server_config``): out-of-range numbers, wrong JSON types, text that is not
Unicode, oversized and slow bodies and heads, too many connections, a prefill that fails for one
request of several, keys on /metrics and /openapi.json, Retry-After, and a burst of all of it
beside innocent requests."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import threading
import time

import httpx
import pytest
from conftest import free_port

from introllm.server.config import ServerConfig

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
LIMITS = dict(max_tokens=16, max_n=4, max_batch=8, max_body_mb=1.0, read_timeout=1.5)


@contextlib.contextmanager
def guarded_server(config: ServerConfig, checkpoint):
    """A real server on a free port, configured as ``introllm serve`` configures it (the protocol
    with the head deadline and the connection cap); yields (base URL, the app)."""
    import uvicorn

    from introllm.server.app import create_app
    from introllm.server.connections import server_config

    config.port = free_port()
    app = create_app(config, checkpoint=checkpoint)
    server = uvicorn.Server(server_config(app, config, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 120
    while not server.started or httpx.get(url + "/health").status_code != 200:
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def guarded(embedded):
    with guarded_server(ServerConfig(**LIMITS), embedded) as (url, app):
        yield url, app


@pytest.fixture
def url(guarded):
    return guarded[0]


def _post(url, path, body=None, raw=None, headers=None, timeout=60):
    if raw is not None:
        return httpx.post(
            url + path, content=raw, headers={"Content-Type": "application/json", **(headers or {})}, timeout=timeout
        )
    return httpx.post(url + path, json=body, headers=headers, timeout=timeout)


def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def _innocent(url, i=0, tokens=4):
    """A small seeded greedy completion; returns its token ids (asserting it succeeded)."""
    r = _post(
        url,
        "/v1/completions",
        {"model": MODEL, "prompt": f"Count: {i}, ", "max_tokens": tokens, "temperature": 0, "ignore_eos": True},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    ids = r.json()["choices"][0]["temperature_trace"]["token_ids"]
    assert len(ids) == tokens
    return ids


def _raw_socket(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(sock, timeout=10.0) -> tuple[int, dict, bytes]:
    """Read one response: status, headers (lower-case names), body (Content-Length of it, or up
    to the end of the connection)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = [
                int(v)
                for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                if k.strip().lower() == b"content-length"
            ]
            if length and len(body) >= length[0]:
                break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


# ---------------------------------------------------------------- items 1, 4, 8: every field is bounded

BIG = 9223372036854775808  # 2**63: one past int64
HOSTILE = [
    # (path, body or raw JSON text, status, words the message must contain, param)
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 2, "top_k": BIG}, 400, "less than or equal to", "top_k"),
    ("/v1/completions", {"prompt": "Hi", "top_k": -1}, 400, "greater than or equal to 0", "top_k"),
    ("/v1/completions", {"prompt": "Hi", "seed": BIG}, 400, "less than or equal to", "seed"),
    ("/v1/completions", {"prompt": "Hi", "seed": -BIG - 1}, 400, "greater than or equal to", "seed"),
    ("/v1/completions", {"prompt": "Hi", "n": 10**30}, 400, "n is 1000000000000000000000000000000", "n"),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 10**30}, 400, "at most 16", "max_tokens"),
    ("/v1/completions", {"prompt": "Hi", "logprobs": 10**30}, 400, "less than or equal to 5", "logprobs"),
    ("/v1/completions", {"prompt": [10**30]}, 400, "outside the vocabulary", "prompt"),
    ("/v1/completions", {"prompt": [[5, -1]]}, 400, "outside the vocabulary", "prompt"),
    ("/v1/completions", {"prompt": ["Hi"] * 9}, 400, "9 prompts exceed the batch size 8", "prompt"),
    ("/v1/completions", {"prompt": "Hi", "stop": ["x" * 1001]}, 400, "at most 1000 characters", "stop"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 10**30, "logprobs": True},
        400,
        "less than or equal to 20",
        "top_logprobs",
    ),
    # item 8: strict types, no NaN, best_of as documented, a tool message needs content
    ("/v1/completions", {"prompt": "Hi", "echo": 0}, 400, "echo: must be true or false", "echo"),
    ("/v1/completions", {"prompt": "Hi", "stream": 1}, 400, "stream: must be true or false", "stream"),
    ("/v1/completions", {"prompt": "Hi", "n": True}, 400, "n: must be an integer", "n"),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": "5"}, 400, "max_tokens: must be an integer", "max_tokens"),
    ("/v1/completions", '{"prompt": "Hi", "temperature": NaN}', 400, "not NaN", "temperature"),
    ("/v1/completions", '{"prompt": "Hi", "top_p": Infinity}', 400, "not NaN or Infinity", "top_p"),
    ("/v1/completions", {"prompt": "Hi", "best_of": 2}, 400, "best_of must equal n", None),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "tool"}]},
        400,
        "a tool message needs content",
        "messages.1",
    ),
    ("/v1/completions", '{"prompt": "Hi", "n": 1' + "0" * 5000 + "}", 400, "could not be parsed", None),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "tool", "content": " \u3000\n"}]},
        400,
        "messages are empty",
        "messages",
    ),
    # item 4: text that is not Unicode
    ("/v1/completions", '{"prompt": "Hi \\ud800 there"}', 400, "lone UTF-16 surrogate", "prompt"),
    ("/v1/completions", '{"prompt": ["ok", "Hi \\udfff"]}', 400, "lone UTF-16 surrogate", "prompt.1"),
    (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": "Hi \\ud800 there"}]}',
        400,
        "lone UTF-16 surrogate",
        "messages.0.content",
    ),
    (
        "/v1/chat/completions",
        '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}',
        400,
        "lone UTF-16 surrogate",
        "messages.0.content.0.text",
    ),
    ("/v1/completions", '{"prompt": "Hi", "stop": ["\\ud800"]}', 400, "lone UTF-16 surrogate", "stop.0"),
    ("/v1/completions", '{"prompt": "Hi", "user": "\\udc00"}', 400, "lone UTF-16 surrogate", "user"),
]


def _send(url, path, body, timeout=60):
    if isinstance(body, str):  # raw JSON text (NaN, lone surrogates, huge numbers): "model" added in front
        return _post(url, path, raw=(f'{{"model": "{MODEL}", ' + body[1:]).encode(), timeout=timeout)
    return _post(url, path, {"model": MODEL, "max_tokens": 2, **body}, timeout=timeout)


@pytest.mark.parametrize("path, body, status, words, param", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_a_hostile_value_is_a_4xx_naming_the_field(url, path, body, status, words, param):
    err = _error(_send(url, path, body), status)
    assert words in err["message"], err
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"


def test_an_unknown_model_with_a_surrogate_is_a_404_not_a_500(url):
    err = _error(_post(url, "/v1/completions", raw=b'{"model": "gpt-\\ud800", "prompt": "x"}'), 404)
    assert "gpt-\\ud800" in err["message"] and err["code"] == "model_not_found"


def test_405_names_the_allowed_methods(url):
    r = httpx.put(url + "/v1/completions", json={})
    err = _error(r, 405)
    assert r.headers["allow"] == "POST" and "PUT is not allowed" in err["message"]
    assert httpx.delete(url + "/health").headers["allow"] == "GET"


def test_the_document_states_the_real_constraints(url):
    doc = httpx.get(url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    props = schemas["CompletionRequest"]["properties"]
    best_of = next(b for b in props["best_of"]["anyOf"] if b.get("type") == "integer")
    assert best_of["maximum"] == 4 and "equal to n" in props["best_of"]["description"]
    seed = next(b for b in props["seed"]["anyOf"] if b.get("type") == "integer")
    assert (seed["minimum"], seed["maximum"]) == (-(2**63), 2**63 - 1)  # exact integers, not 9.2e18
    top_k = next(b for b in props["top_k"]["anyOf"] if b.get("type") == "integer")
    assert top_k["maximum"] == 2**63 - 1
    # a message without content is valid only from the assistant
    rule = schemas["ChatMessage"]["anyOf"]
    assert {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}} in rule
    assert {"properties": {"role": {"const": "assistant"}}} in rule
    # the rules across fields that JSON Schema can state: best_of equal to n, a message with content
    best_of_rule = schemas["CompletionRequest"]["allOf"][-1]["anyOf"]
    assert {"required": ["n"], "properties": {"n": {"const": 3}, "best_of": {"const": 3}}} in best_of_rule
    assert "contains" in schemas["ChatCompletionRequest"]["properties"]["messages"]
    # the ones it cannot are described, with every policy name
    from introllm.sampler.policies import policy_names

    assert all(name in props["policy"]["description"] for name in policy_names())
    responses = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert {"408", "413"} <= set(responses)


def test_a_failed_prefill_fails_only_its_request(guarded):
    """Six requests admitted in one prefill, one of which makes the engine raise (as top_k = 2**63
    did in the issue): the scheduler retries them one by one and only that one fails."""
    url, app = guarded
    sched = app.state.introllm.scheduler
    poison = 31337  # a top_k the wrapper below treats as one the engine cannot take
    calls, ready = [], threading.Event()
    batch_add, admit = sched.batch.add, sched._admit

    def add(rows):
        calls.append(len(rows))
        if any(row.params.top_k == poison for row in rows):
            raise ValueError("Overflow when unpacking long long")
        return batch_add(rows)

    def gated_admit():  # hold admission until all six wait, so that they share one prefill
        if not ready.is_set():
            if len(sched._pending) < 6:
                return
            ready.set()
        admit()

    sched.batch.add, sched._admit = add, gated_admit
    try:
        bodies = [{"prompt": f"Story {i}:", "max_tokens": 5, "seed": i, "ignore_eos": True} for i in range(5)]
        bodies.insert(2, {"prompt": "Hi", "max_tokens": 5, "top_k": poison})
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda b: _send(url, "/v1/completions", b, timeout=120), bodies))
    finally:
        del sched.batch.add, sched._admit
    assert calls[0] == 6 and calls[1:] == [1] * 6  # one joint prefill, then one by one
    err = _error(results.pop(2), 500)
    assert "internal error while reading the prompt" in err["message"] and err["type"] == "server_error"
    for r in results:
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 5


# ---------------------------------------------------------------- item 2: size limits, tokenizing off the loop


def test_a_body_over_the_limit_is_413_before_it_is_read(guarded):
    url, app = guarded
    port = int(url.rsplit(":", 1)[1])
    with _raw_socket(port) as s:  # the head announces 20 MB; no byte of the body is ever sent
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 20000000\r\n\r\n"
        )
        start = time.monotonic()
        status, _, body = _read_response(s, timeout=5)
        assert time.monotonic() - start < 1.0
    err = json.loads(body)["error"]
    assert status == 413 and err["code"] == "request_too_large" and "at most 1000000 bytes" in err["message"]
    # the same through a client that sends it all: a value in an ignored field, and a chunked body
    err = _error(_post(url, "/v1/completions", {"model": MODEL, "prompt": "Hi", "user": "x" * 2_000_000}), 413)
    assert "--max-body-mb" in err["message"]
    chunks = (b'{"model": "%s", "prompt": "' % MODEL.encode(), *([b"x" * 100_000] * 15), b'"}')
    r = httpx.post(url + "/v1/completions", content=iter(chunks), headers={"Content-Type": "application/json"})
    assert _error(r, 413)["code"] == "request_too_large"
    _innocent(url)


def test_a_prompt_too_long_for_the_context_is_refused_by_its_length_before_tokenizing(url):
    from introllm.server.prepare import max_prompt_chars

    r = _post(url, "/v1/completions", {"model": MODEL, "prompt": "7" * 700_000, "max_tokens": 2})
    err = _error(r, 400)
    assert "700000 characters" in err["message"] and err["code"] == "context_length_exceeded"
    r = _post(url, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "7" * 700_000}]})
    assert "characters" in _error(r, 400)["message"]
    from transformers import AutoTokenizer

    from introllm.sampler.models import default_checkpoint

    tok = AutoTokenizer.from_pretrained(default_checkpoint())
    bound = max_prompt_chars(tok, 8192)
    assert 8192 < bound < 700_000
    # the bound is safe: the vocabulary's longest entry, repeated to the bound, still fills the context
    longest = max(tok.get_vocab(), key=len)
    assert len(tok.convert_tokens_to_string([longest])) * 8192 <= bound


def test_tokenizing_runs_off_the_event_loop(guarded, monkeypatch):
    """A request whose planning takes 3 s (a huge prompt on a slow CPU) does not stall /health."""
    from introllm.server import routes

    url, _ = guarded
    original = routes.plan_completion

    def slow_plan(*args):
        time.sleep(3.0)  # blocks whichever thread runs it
        return original(*args)

    monkeypatch.setattr(routes, "plan_completion", slow_plan)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_send, url, "/v1/completions", {"prompt": "Hi"})
        time.sleep(0.5)
        start = time.monotonic()
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        assert time.monotonic() - start < 1.0
        assert not slow.done()
        assert slow.result().status_code == 200


# ---------------------------------------------------------------- item 3: read deadlines, connection cap


def test_a_slow_head_gets_408_and_its_connection_is_closed(url):
    port = int(url.rsplit(":", 1)[1])
    with _raw_socket(port) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        with contextlib.suppress(OSError):  # one byte every 0.3 s, until the server hangs up
            for _ in range(40):
                s.sendall(b"X-Slow: a\r\n"[:1])
                time.sleep(0.3)
                if time.monotonic() - start > 4:
                    break
        status, headers, body = _read_response(s)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - start < 6


def test_a_slow_body_gets_408(url):
    port = int(url.rsplit(":", 1)[1])
    with _raw_socket(port) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model": '
        )
        start = time.monotonic()
        status, headers, body = _read_response(s)
    assert status == 408 and 1.0 < time.monotonic() - start < 6
    err = json.loads(body)["error"]
    assert err["code"] == "request_timeout" and "body did not arrive within 1.5 seconds" in err["message"]


def test_a_huge_head_gets_431(url):
    port = int(url.rsplit(":", 1)[1])
    with _raw_socket(port) as s:
        with contextlib.suppress(OSError):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        status, _, body = _read_response(s)
    assert status == 431 and json.loads(body)["error"]["code"] == "header_too_large"


def test_half_sent_heads_are_dropped_and_innocent_requests_go_on(url):
    port = int(url.rsplit(":", 1)[1])
    socks = [_raw_socket(port) for _ in range(100)]
    for s in socks:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
    _innocent(url)
    time.sleep(2.5)  # past the deadline
    closed = 0
    for s in socks:
        status, _, _ = _read_response(s, timeout=5)
        closed += status == 408
        s.close()
    assert closed == len(socks)
    _innocent(url)


def test_connections_beyond_the_cap_get_503_with_retry_after(embedded):
    config = ServerConfig(
        max_connections=4, read_timeout=30.0, **{k: v for k, v in LIMITS.items() if k != "read_timeout"}
    )
    with guarded_server(config, embedded) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        idle = [_raw_socket(port) for _ in range(4)]
        time.sleep(0.2)
        with _raw_socket(port) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = _read_response(s)
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "overloaded"
        for s in idle:
            s.close()
        time.sleep(0.2)
        _innocent(url)


# ---------------------------------------------------------------- items 5, 6, 7


def test_same_seed_same_tokens_alone_and_beside_others_in_float32(url):
    """The promise as README and the OpenAPI document now state it: in float32, a seeded request
    gets the same tokens alone and beside other requests (the embedded fixture is float32)."""
    from introllm.server.schemas import SEED_PROMISE

    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 16, "seed": 7, "ignore_eos": True}
    alone = _post(url, "/v1/completions", body).json()["choices"][0]["temperature_trace"]
    others = [
        {"model": MODEL, "prompt": f"{w} is", "max_tokens": 16, "ignore_eos": True} for w in ("Paris", "Rome", "Oslo")
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(_post, url, "/v1/completions", b) for b in others]
        time.sleep(0.3)  # the others are decoding when the seeded request joins
        beside = pool.submit(_post, url, "/v1/completions", body).result().json()["choices"][0]["temperature_trace"]
        assert all(f.result().status_code == 200 for f in busy)
    assert beside["token_ids"] == alone["token_ids"] and beside["updated"] == alone["updated"]
    assert beside["temperatures"] == pytest.approx(alone["temperatures"], rel=1e-5)  # the 7th digit may move
    # the promise is narrowed where a reader meets it
    doc = httpx.get(url + "/openapi.json").json()
    assert doc["components"]["schemas"]["CompletionRequest"]["properties"]["seed"]["description"] == SEED_PROMISE
    assert "bfloat16" in SEED_PROMISE and "float32" in SEED_PROMISE and "near-tie" in SEED_PROMISE
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "With bfloat16" in readme and "after a near-tie the tokens" in readme


def test_the_api_key_covers_metrics_and_the_api_description(embedded):
    with guarded_server(ServerConfig(api_key="s3cret", **LIMITS), embedded) as (url, _):
        key = {"Authorization": "Bearer s3cret"}
        for path in ("/metrics", "/openapi.json"):
            assert _error(httpx.get(url + path), 401)["code"] == "invalid_api_key"
            assert _error(httpx.get(url + path, headers={"Authorization": "Bearer guess"}), 401)
            assert httpx.get(url + path, headers=key).status_code == 200
        assert httpx.get(url + "/health").status_code == 200  # open: load balancers probe it
        assert httpx.get(url + "/").status_code == 200  # the page; it sends the key with its requests
        assert 'status="401"' in httpx.get(url + "/metrics", headers=key).text
    with guarded_server(ServerConfig(api_key="s3cret", public_metrics=True, **LIMITS), embedded) as (url, _):
        assert httpx.get(url + "/metrics").status_code == 200  # the explicit opt-out
        assert httpx.get(url + "/openapi.json").status_code == 401


def test_a_full_queue_is_429_with_retry_after(embedded):
    limits = {k: v for k, v in LIMITS.items() if k not in ("max_batch", "max_n")}
    config = ServerConfig(max_batch=1, max_queue=1, max_n=1, **limits)
    with guarded_server(config, embedded) as (url, _):
        body = {"prompt": "Tell me a story.", "max_tokens": 16, "ignore_eos": True}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: _send(url, "/v1/completions", body, timeout=120), range(4)))
        busy = [r for r in results if r.status_code == 429]
        assert busy and all(r.status_code == 200 for r in results if r not in busy)
        for r in busy:
            assert r.headers["retry-after"] == "1"
            err = _error(r, 429)
            assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"


def test_serve_help_states_the_queue_and_batch_limits():
    from introllm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    text = "".join(sub.choices["serve"].format_help().split())  # no spaces: wrapping cannot matter

    def said(words):
        return "".join(words.split()) in text

    assert said("max_batch sequences decoding and max_queue requests waiting, the next request is answered 429")
    assert said("with a Retry-After header [64]")
    for flag in ("--max-body-mb", "--read-timeout", "--keep-alive", "--max-connections", "--public-metrics"):
        assert said(flag)


# ---------------------------------------------------------------- a burst: hostile beside innocent


def test_a_burst_of_hostile_requests_beside_innocent_ones(guarded):
    """Every hostile request of this file at once, with slow and oversized ones, beside innocent
    requests: every innocent one succeeds with the tokens it gets alone, every hostile one is a 4xx."""
    url, _ = guarded
    port = int(url.rsplit(":", 1)[1])
    expected = {i: _innocent(url, i) for i in range(8)}

    def slow_head():
        with _raw_socket(port) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            return _read_response(s)[0]

    def huge_body():
        return _post(url, "/v1/completions", {"model": MODEL, "prompt": "x" * 1_200_000}).status_code

    hostile = [lambda p=p, b=b: _send(url, p, b).status_code for p, b, *_ in HOSTILE]
    hostile += [slow_head] * 10 + [huge_body] * 3
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        bad = [pool.submit(h) for h in hostile]
        good = {i: pool.submit(_innocent, url, i) for i in expected}
        assert {i: f.result() for i, f in good.items()} == expected
        statuses = [f.result() for f in bad]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert statuses.count(408) == 10 and statuses.count(413) == 3
    assert httpx.get(url + "/health").json()["status"] == "ok"
