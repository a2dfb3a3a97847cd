"""Checkpoints of a known model's shape with random weights, built from its config (no download):
what the GPU variant of Table 3 (``introllm bench --random-model qwen3-1.7b``) and
scripts/gpu-check.sh run on. Throughput depends on the shapes, not on the values."""

from __future__ import annotations

from pathlib import Path

SHAPES: dict[str, dict] = {
    # Qwen/Qwen3-1.7B's config.json (the paper's Table 3 model): 1.72 B parameters, tied embeddings.
    "qwen3-1.7b": {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 40960,
        "max_window_layers": 28,
        "num_attention_heads": 16,
        "num_hidden_layers": 28,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
}


def random_config(shape: str):
    """The transformers config of ``shape`` (a key of SHAPES); ValueError naming the known ones."""
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; known: {', '.join(SHAPES)}")
    values = dict(SHAPES[shape])
    return AutoConfig.for_model(values.pop("model_type"), **values)


def random_checkpoint(shape: str, dtype: str = "bfloat16", into: Path | None = None, seed: int = 0) -> Path:
    """A checkpoint directory (DESIGN.md format) of ``shape`` with random weights and a random
    temperature head, built once under ``~/.cache/introllm/random-<shape>-<dtype>`` (or ``into``)
    and reused. The tokenizer is the embedded model's (its ids are valid ids of any shape here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from introllm.sampler.checkpoint import HEAD_WEIGHTS, save_checkpoint
    from introllm.sampler.head import HeadConfig, TemperatureHead
    from introllm.sampler.models import _DTYPES, cache_dir, default_checkpoint

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    path = Path(into) if into else cache_dir() / f"random-{shape}-{dtype}"
    if (path / "config.json").is_file() and (path / HEAD_WEIGHTS).is_file():
        return path
    config = random_config(shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=_DTYPES[dtype])
    head = TemperatureHead(HeadConfig(hidden_size=config.hidden_size))
    head.reset_parameters(torch.Generator().manual_seed(seed))
    tokenizer = AutoTokenizer.from_pretrained(default_checkpoint())
    return save_checkpoint(path, model, head, tokenizer)
