"""``introllm generate``: decode in-process with a temperature policy and show each token's tau."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

from .common import (
    CompileArgs,
    LocalBackendArgs,
    ModelArgs,
    add_config_flags,
    config_from_args,
    epilog_parser,
    load_engine,
)

EXAMPLES = """\
examples:
  introllm generate "What is 7 * 8?"                     learned temperature (the default)
  introllm generate "Tell me a joke." --policy fixed:0.7  a fixed temperature
  introllm generate "Hi" --policy greedy --json           greedy, machine-readable
  introllm generate "2+2=" --raw --n 4 --seed 1           no chat template, four samples
  introllm generate "What is 7 * 8?" --head init          the untrained head (tau ~ Uniform[0.6, 1.5])

policies: learned, always-update, prompt-level, fixed:T, greedy, ead, ead-exp, tampo
"""


@dataclass
class GenerateConfig(LocalBackendArgs, CompileArgs, ModelArgs):
    """What ``introllm generate`` decodes, and how it shows it."""

    prompt: str = field(default="", metadata={"flag": "prompt"})
    """the prompt text"""
    policy: str = "learned"
    """temperature policy; see the list below"""
    max_new_tokens: int = 128
    """most tokens to generate"""
    n: int = 1
    """number of samples"""
    seed: int | None = None
    """random seed (same seed, same output) [random]"""
    top_p: float = 1.0
    """nucleus filter after the temperature (1.0 = off)"""
    top_k: int = 0
    """top-k filter after the temperature (0 = off)"""
    raw: bool = False
    """send the prompt as is, without the chat template"""
    system: str | None = None
    """system message for the chat template"""
    no_table: bool = False
    """coloured text and summary only, no per-token table"""
    json: bool = False
    """print the completions and traces as JSON"""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"--max-new-tokens and --n must be >= 1, got {self.max_new_tokens} and {self.n}")


def add_parser(sub) -> None:
    p = epilog_parser(
        sub,
        "generate",
        help="generate a completion and show the temperature of every token",
        description="Generate from a prompt and show each token coloured by its sampling temperature.",
        epilog=EXAMPLES,
    )
    add_config_flags(p, GenerateConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from introllm.clients.render import TraceView, render
    from introllm.sampler import SamplingParams
    from introllm.sampler.text import prompt_ids, token_pieces

    cfg = config_from_args(GenerateConfig, args, keep_none=True)
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens, policy=cfg.policy, seed=cfg.seed, top_p=cfg.top_p, top_k=cfg.top_k
    )
    engine, tokenizer, head = load_engine(cfg, cfg, max_batch=cfg.n, compile=cfg)
    engine.policy(params.policy)  # fail on a bad policy before tokenizing
    chat = not cfg.raw and bool(getattr(tokenizer, "chat_template", None))
    ids = prompt_ids(tokenizer, cfg.prompt, chat=chat, system=cfg.system)
    start = time.perf_counter()
    seqs = engine.generate([ids], params, n=cfg.n)[0]
    seconds = time.perf_counter() - start
    bounds = (head.config.tau_min, head.config.tau_max) if head else (0.6, 1.5)

    if cfg.json:
        out = [
            {
                "text": tokenizer.decode(s.token_ids, skip_special_tokens=True),
                "finish_reason": s.finish_reason,
                "seed": s.seed,
                "stream": s.sample_index,
                "policy": s.policy,
                "temperature_trace": {
                    "token_ids": s.token_ids,
                    "tokens": token_pieces(tokenizer, s.token_ids),
                    "temperatures": s.trace.tau,
                    "updated": s.trace.updated,
                    "logprobs": s.trace.logp,
                    "entropy": s.trace.entropy,
                },
            }
            for s in seqs
        ]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    console = Console(highlight=False)
    for s in seqs:
        if cfg.n > 1:
            console.rule(f"sample {s.sample_index + 1} of {cfg.n}", style="dim")
        view = TraceView(token_pieces(tokenizer, s.token_ids), s.trace.tau, s.trace.updated)
        console.print(
            render(view, table=not cfg.no_table, seconds=seconds / len(seqs), tau_min=bounds[0], tau_max=bounds[1])
        )
    return 0
