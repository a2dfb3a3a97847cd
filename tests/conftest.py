"""Shared fixtures: tiny random models built from a config (no downloads) and the embedded model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from introllm.sampler import HeadConfig, TemperatureHead

VOCAB = 101
EOS = 3


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=EOS,
        pad_token_id=0,
    )
    cfg.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**cfg)).eval()


def tiny_qwen3(seed: int = 0) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        eos_token_id=EOS,
        pad_token_id=0,
    )
    return Qwen3ForCausalLM(cfg).eval()


def random_head(hidden_size: int, seed: int = 0, scale: float = 0.5) -> TemperatureHead:
    """A head with weights far from the initialisation, so decisions vary with h."""
    head = TemperatureHead(HeadConfig(hidden_size=hidden_size))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0.0, scale, generator=g)
    return head


def _shipped_tau_min() -> float:
    from introllm.sampler.models import shipped_head_dir

    return json.loads((shipped_head_dir() / "temperature_head.json").read_text())["tau_min"]


def check_trace(trace, n_tokens, lo=None, hi=1.5):
    """A choice's temperature_trace: one entry per token in each field, tau in [lo, hi], bool flags.
    lo: by default the shipped default head's tau_min (0.1; the paper's heads: 0.6)."""
    lo = _shipped_tau_min() if lo is None else lo
    assert set(trace) == {"token_ids", "tokens", "temperatures", "updated"}
    assert (
        len(trace["token_ids"])
        == len(trace["tokens"])
        == len(trace["temperatures"])
        == len(trace["updated"])
        == n_tokens
    )
    assert all(lo <= t <= hi for t in trace["temperatures"])
    assert all(isinstance(u, bool) for u in trace["updated"])


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture(params=["llama", "qwen3"])
def model(request):
    return tiny_llama() if request.param == "llama" else tiny_qwen3()


@pytest.fixture(scope="session")
def embedded():
    """The real SmolLM2-135M-Instruct checkpoint (converted once into the cache)."""
    from introllm.sampler.models import load_model

    return load_model(device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A checkpoint of a 2-layer random Llama with SmolLM2's tokenizer (so prompts, the chat
    template and decoding are real) and a fresh head: for end-to-end training and eval tests."""
    from transformers import AutoTokenizer

    from introllm.sampler.checkpoint import save_checkpoint
    from introllm.sampler.models import default_checkpoint

    tok = AutoTokenizer.from_pretrained(default_checkpoint())
    model = tiny_llama(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    save_checkpoint(path, model, TemperatureHead(HeadConfig(32)), tok)
    return path


# --------------------------------------------------------------------------- live HTTP servers

import contextlib  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(config, checkpoint=None, loader=None, wait_ready: bool = True):
    """A real uvicorn server on a free local port, in a thread; yields its base URL."""
    import httpx
    import uvicorn

    from introllm.server.app import create_app

    config.port = free_port()
    app = create_app(config, checkpoint=checkpoint, loader=loader)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    while wait_ready and httpx.get(url + "/health").status_code != 200:
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module", params=["torch", "llamacpp"])
def backend_url(request):
    """A server on the embedded model on each CPU backend in turn: the torch engine (``server_url``)
    and llama.cpp (the embedded model's GGUF as shipped; an error, not a skip, where
    llama-cpp-python is missing: make install-llamacpp)."""
    if request.param == "torch":
        yield request.getfixturevalue("server_url")
        return
    from introllm.sampler.backends import require_llamacpp
    from introllm.server.config import ServerConfig

    require_llamacpp("the llama.cpp server tests")
    with live_server(ServerConfig(backend="llamacpp", max_batch=16)) as url:
        yield url


@pytest.fixture(scope="module")
def server_url(embedded):
    """A server on the embedded model with the default settings, one per test module (so the
    modules' metrics do not mix)."""
    from introllm.server.config import ServerConfig

    with live_server(ServerConfig(), checkpoint=embedded) as url:
        yield url
