"""The embedded SmolLM2-135M-Instruct, for real: weights, tokenizer, engine and the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

from introllm.sampler import Engine, SamplingParams
from introllm.sampler.scoring import collate, completion_hidden, completion_logprobs
from introllm.sampler.text import prompt_ids, token_pieces

pytestmark = pytest.mark.slow


def test_embedded_model_answers(embedded):
    engine = Engine(embedded.model, embedded.head)
    ids = prompt_ids(embedded.tokenizer, "What is the capital of France?", chat=True)
    ((seq,),) = engine.generate([ids], SamplingParams(max_new_tokens=20, policy="greedy"))
    text = embedded.tokenizer.decode(seq.token_ids, skip_special_tokens=True)
    assert "Paris" in text and seq.finish_reason == "stop"
    x = torch.tensor([ids])
    reference = embedded.model.generate(
        input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=20
    )
    assert seq.token_ids == reference[0, len(ids) :].tolist()  # greedy agrees with Hugging Face generate


def test_embedded_learned_sampling_is_consistent(embedded):
    engine = Engine(embedded.model, embedded.head)
    prompts = [
        prompt_ids(embedded.tokenizer, q, chat=True) for q in ("Name a colour.", "What is 2 + 3? Answer briefly.")
    ]
    seqs = [s for g in engine.generate(prompts, SamplingParams(max_new_tokens=24, seed=0), n=2) for s in g]
    for s in seqs:
        lo, hi = embedded.head.config.tau_min, embedded.head.config.tau_max
        assert all(lo <= t <= hi for t in s.trace.tau)
        pieces = token_pieces(embedded.tokenizer, s.token_ids)
        assert "".join(pieces) == embedded.tokenizer.decode(s.token_ids, skip_special_tokens=True)
    batch = collate(seqs, pad_id=embedded.tokenizer.pad_token_id)
    with torch.no_grad():
        h = completion_hidden(embedded.model, batch)
        logp, _ = completion_logprobs(embedded.model, h, batch)
        temp = engine.policy("learned").log_prob(embedded.head(h), batch.updated, batch.z)
    m = batch.mask.bool()
    # float32 rounding of the logits (the engine's incremental forward vs the trainer's whole one)
    # is divided by tau: at tau 0.1 (the default head's floor) ten times what it is at 1.0
    atol = 1e-4 * max(1.0, 0.6 / float(batch.tau[m].min()))
    torch.testing.assert_close(logp[m], batch.old_logp[m], atol=atol, rtol=0)
    torch.testing.assert_close(temp[m], batch.old_temp_logp[m], atol=1e-5, rtol=0)


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "introllm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "100"},
    )


def test_cli_generate_default_prints_completion_and_temperatures():
    r = _cli("generate", "What is the capital of France?", "--seed", "0", "--max-new-tokens", "24")
    assert r.returncode == 0, r.stderr
    assert "tau 0.10" in r.stdout and "updates" in r.stdout and "tokens · tau mean" in r.stdout  # the head's range
    assert r.stdout.count("*") >= 1  # per-token table marks updates


def test_cli_generate_json_greedy():
    r = _cli("generate", "What is the capital of France?", "--policy", "greedy", "--json", "--max-new-tokens", "16")
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)
    trace = out["temperature_trace"]
    assert "Paris" in out["text"]
    assert len(trace["token_ids"]) == len(trace["temperatures"]) == len(trace["updated"]) == len(trace["tokens"])
    assert set(trace["temperatures"]) == {0.0}


def test_cli_errors_are_one_line():
    for args, needle in [
        (("generate", "hi", "--policy", "warm"), "unknown temperature policy 'warm'"),
        (("generate", "hi", "--checkpoint", "/nonexistent"), "not a checkpoint directory"),
        (("generate", "hi", "--max-new-tokens", "0"), "must be a positive integer"),
    ]:
        r = _cli(*args)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr


def test_cli_bench_smoke(tmp_path):
    r = _cli("bench", "--batch-sizes", "2", "--new-tokens", "3", "--repeats", "1", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    assert "tokens/s, median of 1" in r.stdout and "x │" in r.stdout  # the table, with its ratio column
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data["results"][0]["tokens_per_s"]) == {
        "engine learned",
        "engine fixed:1.0",
        "engine learned, HF forward",
        "HF generate",
    }
