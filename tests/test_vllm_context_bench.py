"""``introllm bench --contexts`` (the paper's Table 3): its counting (parameters, FLOPs) against
real models built from configs, the paper's own head share for Qwen3-1.7B, and one short run on
each backend with the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from introllm.benchmarks.contexts import (
    decode_flops_per_token,
    head_flops_per_token,
    head_params,
    matmul_params,
    model_params,
    parse_contexts,
)
from introllm.benchmarks.random_model import random_config
from introllm.sampler.head import HeadConfig, TemperatureHead


def tiny(model_type: str, tied: bool):
    return AutoConfig.for_model(
        model_type,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=300,
        tie_word_embeddings=tied,
    )


@pytest.mark.parametrize("model_type,tied", [("llama", True), ("llama", False), ("qwen3", True)])
def test_parameter_count_matches_the_built_model(model_type, tied):
    cfg = tiny(model_type, tied)
    model = AutoModelForCausalLM.from_config(cfg)
    assert model_params(cfg) == sum(p.numel() for p in model.parameters())
    matrices = sum(
        p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n and "lm_head" not in n
    )
    assert matmul_params(cfg)["layers"] == matrices


def test_qwen3_1_7b_shape_gives_the_papers_head_share():
    """Table 3: the head adds 0.122 % to Qwen3-1.7B (its 2.1 M parameters; DESIGN.md)."""
    cfg = random_config("qwen3-1.7b")
    head = TemperatureHead(HeadConfig(hidden_size=cfg.hidden_size))
    assert model_params(cfg) == pytest.approx(1.72e9, rel=0.01)
    assert head_params(head) == 2048 * 1024 + 1024 + 1024 * 3 + 3
    assert round(head_params(head) / model_params(cfg) * 100, 3) == 0.122


def test_flops_per_token_grow_with_context_by_attention_only():
    cfg = tiny("llama", True)
    f1, f2 = decode_flops_per_token(cfg, 1000), decode_flops_per_token(cfg, 2000)
    w = matmul_params(cfg)
    assert f1 == 2 * (w["layers"] + w["lm_head"]) + 4 * 3 * 4 * 16 * 1000
    assert f2 - f1 == 4 * 3 * 4 * 16 * 1000
    head = TemperatureHead(HeadConfig(hidden_size=64))
    assert head_flops_per_token(head) == 2 * (64 * 32 + 32 * 3)


def test_parse_contexts():
    assert parse_contexts("1k,2k, 4k,8k") == [1024, 2048, 4096, 8192]
    assert parse_contexts("500,1.5k") == [500, 1536]
    for bad in ("", "1k,x", "1"):
        with pytest.raises(ValueError, match="context"):
            parse_contexts(bad)


@pytest.mark.slow
def test_bench_contexts_runs_on_both_backends(tmp_path):
    """The command end to end, tiny: both backends report a positive decode rate for default and
    learned at each context, and the head share of the embedded model."""
    out = tmp_path / "t3.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "introllm",
            "bench",
            "--contexts",
            "256,512",
            "--new-tokens",
            "6",
            "--repeats",
            "2",
            "--vllm-eager",
            "--kv-cache-gib",
            "1",
            "--dtype",
            "float32",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [r["backend"] for r in data["results"]] == ["torch", "vllm"]
    for res in data["results"]:
        assert [r["context"] for r in res["rows"]] == [256, 512]
        assert 0.0005 < res["head_share"] < 0.005  # 576 -> 288 -> 3 on a 135 M model: 0.12 %
        for r in res["rows"]:
            assert r["prompt_tokens"] == r["context"] - 6
            assert all(len(v) == 2 and min(v) > 0 for v in r["tokens_per_s"].values())
    assert data["results"][1]["runner"] == "v1"
    assert "Param. Δ" in run.stdout and "tokens/s (vllm)" in run.stdout


def test_random_checkpoint_of_a_shape_loads_with_its_head(tmp_path, monkeypatch):
    """What --random-model builds (here a tiny Qwen3 shape): a checkpoint the torch loader takes,
    with a head of the model's width; built once, then reused."""
    from introllm.benchmarks import random_model
    from introllm.sampler.checkpoint import load_checkpoint

    tiny_shape = dict(
        random_model.SHAPES["qwen3-1.7b"],
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=512,
    )
    monkeypatch.setitem(random_model.SHAPES, "tiny", tiny_shape)
    path = random_model.random_checkpoint("tiny", dtype="float32", into=tmp_path / "tiny")
    ck = load_checkpoint(path)
    assert ck.model.config.model_type == "qwen3" and ck.model.config.hidden_size == 64
    assert ck.head.config.hidden_size == 64 and ck.tokenizer is not None
    assert model_params(ck.model.config) == sum(p.numel() for p in ck.model.parameters())
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert random_model.random_checkpoint("tiny", dtype="float32", into=tmp_path / "tiny") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown model shape"):
        random_model.random_checkpoint("gpt-9")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--contexts", "16", "--new-tokens", "32"], "longer than --new-tokens"),
        (["--contexts", "1k", "--backends", "tensorrt"], "--backends takes torch, torch-compiled and vllm"),
        (["--contexts", "1k,lots"], "--contexts takes"),
    ],
)
def test_bad_bench_arguments_are_one_line_errors(argv, message, capsys):
    from introllm.cli import main

    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("introllm bench: error:") and message in err[0]
