"""The server's pieces called by name, without a socket: token bytes and names, the response
builders over Token records, a request planned at the edge, and the handlers themselves."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from introllm.sampler.models import default_checkpoint
from introllm.server import routes
from introllm.server.config import ServerConfig
from introllm.server.errors import APIError
from introllm.server.prepare import COMPLETION_MAX_TOKENS, plan_chat, plan_completion
from introllm.server.records import Token, TokenLogprob
from introllm.server.responses import chat_logprobs, choice, completion_logprobs
from introllm.server.scheduler import IMPOSSIBLE_LOGPROB, finite_logprob
from introllm.server.schemas import ChatCompletionRequest, CompletionRequest
from introllm.server.tokens import TokenBytes, token_name


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(default_checkpoint())


class _Engine:
    vocab_size, max_context = 49152, 8192

    def policy(self, spec):
        if spec.startswith("nope"):
            raise ValueError(f"unknown temperature policy '{spec}'")


def test_token_names_follow_openai():
    assert token_name("東".encode()) == "東"
    assert token_name(b"\xe3\x81") == "bytes:\\xe3\\x81"
    assert token_name(b" \xe6") == "bytes: \\xe6"
    assert token_name(b"\xe3\x81") != token_name(b"\xe3\x82")


def test_each_tokens_own_bytes_rebuild_the_text(tok):
    tb = TokenBytes(tok)
    assert tb.byte_level
    for text in ("日本の首都は東京です。", " naïve café — ok", "emoji 🙂 and 한국어"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert b"".join(tb.raw(i) for i in ids) == text.encode()
        assert any(tb.name(i).startswith("bytes:") for i in ids) or all(len(tok.decode([i])) for i in ids)
    assert tb.raw(tok.convert_tokens_to_ids("<|im_end|>")) == b"<|im_end|>"


def test_non_finite_logprobs_become_json_numbers():
    assert finite_logprob(-math.inf) == IMPOSSIBLE_LOGPROB == -9999.0
    assert finite_logprob(math.nan) is None
    assert finite_logprob(-1.5) == -1.5


def _lp(token_id, name, logprob):
    return TokenLogprob(token_id, name, name.encode() if not name.startswith("bytes:") else b"\xe3", logprob)


def _token(index=0, sampled=None, top=None, piece="a", offset=0, finish=None):
    return Token(index, sampled or _lp(5, "a", -0.1), piece, piece, offset, 1.0, True, top, finish)


def test_completion_top_logprobs_keep_the_sampled_token_and_every_alternative():
    top = (_lp(1, "x", -0.5), _lp(2, "x", -0.7), _lp(3, "y", -0.9))  # two ids with one name
    t = _token(sampled=_lp(5, "a", -2.0), top=top)
    (d,) = completion_logprobs([t])["top_logprobs"]
    assert d == {"x": -0.5, "x<2>": -0.7, "y": -0.9, "a": -2.0}


def test_one_builder_for_whole_responses_and_chunks():
    tokens = [_token(piece="Hel", offset=0), _token(piece="lo", offset=3, finish="length")]
    body = choice("chat.completion", 0, tokens, logprobs=True)
    assert body["message"]["content"] == "Hello" and body["finish_reason"] == "length"
    assert body["temperature_trace"] == {
        "token_ids": [5, 5],
        "tokens": ["Hel", "lo"],
        "temperatures": [1.0, 1.0],
        "updated": [True, True],
    }
    assert [e["token"] for e in chat_logprobs(tokens)["content"]] == ["a", "a"]
    assert completion_logprobs(tokens)["text_offset"] == [0, 3]


def test_the_default_max_tokens_never_exceeds_the_servers_cap(tok):
    config = ServerConfig(max_tokens=4, default_max_tokens=256)
    plan = plan_completion(CompletionRequest(model="m", prompt="Hi"), tok, _Engine(), config)
    assert plan.params.max_new_tokens == 4 < COMPLETION_MAX_TOKENS
    plan = plan_chat(
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}]), tok, _Engine(), config
    )
    assert plan.params.max_new_tokens == 4
    with pytest.raises(APIError, match="at most 4"):
        plan_completion(CompletionRequest(model="m", prompt="Hi", max_tokens=5), tok, _Engine(), config)


def test_a_null_prompt_is_the_start_of_a_document(tok):
    plan = plan_completion(
        CompletionRequest.model_validate({"model": "m", "prompt": None}), tok, _Engine(), ServerConfig()
    )
    assert plan.prompts == [[tok.convert_tokens_to_ids("<|endoftext|>")]]


def test_a_plan_is_checked_once_at_the_edge(tok):
    with pytest.raises(APIError) as e:
        plan_completion(CompletionRequest(model="m", prompt="Hi", policy="nope"), tok, _Engine(), ServerConfig())
    assert e.value.status == 400 and e.value.param == "policy"
    with pytest.raises(APIError) as e:
        plan_completion(CompletionRequest(model="m", prompt=[1, 99999]), tok, _Engine(), ServerConfig())
    assert e.value.param == "prompt"


def test_handlers_are_module_level_functions():
    state = SimpleNamespace(load_error=None, ready=False)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(introllm=state)))
    r = asyncio.run(routes.health(request))
    assert r.status_code == 503
    state.load_error = "ValueError: broken"
    with pytest.raises(APIError, match="failed to load: ValueError: broken"):
        asyncio.run(routes.models(request))
