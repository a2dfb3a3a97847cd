"""Issue 14 probe: does each rollout engine draw every action from the distribution the trainer scores?

    python scripts/rollout-pit-probe.py [--checkpoint DIR] [--samples 64] [--tokens 48]
    python scripts/rollout-pit-probe.py --backend llamacpp      # the llama.cpp backend (issue 28)

Samples ``samples`` completions of each of 8 arithmetic training prompts with the learned policy
(EOS allowed, as in training) on the colocated vLLM engine and on the torch engine (same weights,
float32, vLLM eager), then rescores every recorded action with the trainer's model and head and
applies the randomized probability integral transform (PIT, the Rosenblatt transform):

    token y_t:  vocabulary sorted by p_t = softmax(logits_t / tau_t), descending;
                u = P(tokens ranked above y_t) + V * p_t(y_t)
    gate c_t:   u = V * P(c_t = 0)  if c_t = 0,  P(c_t = 0) + V * P(c_t = 1)  if c_t = 1
    z_t:        u = BetaCDF(z_t; alpha_t, beta_t)   where c_t = 1

with V ~ U(0, 1) independent. If an engine draws each action from that distribution, the u's are
i.i.d. U(0, 1), whatever the model and head; a Kolmogorov-Smirnov test against U(0, 1) says how
far they are, and a binomial test of the share above 0.99 looks at the top end, where a truncated
sampler leaves its mark. The logp-gap check (trainer vs engine log-prob of the drawn token) cannot see a
sampler that draws from another distribution than it reports; this can, over whole continuations:
a top-p / top-k truncation, for instance, leaves no u near 1 (with the descending order, the
dropped tail is the top of [0, 1]). Two controls: the torch engine, whose u's must pass too, and
the torch engine with top_p 0.98, which the probe must catch.
~8 min on 2 CPU cores at the defaults.

``--backend llamacpp``: the llama.cpp engine on the embedded model's GGUF, its draws rescored with
llama.cpp's own logits and hidden states (``LlamaCppEngine.score``: one decode of the whole
sequence), since its arithmetic (8-bit activations) is not the torch model's; the control is the
same engine with top_p 0.98.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import stats  # dev dependency

from introllm.sampler import Engine, SamplingParams
from introllm.sampler import head as H
from introllm.sampler.models import default_checkpoint, load_model
from introllm.sampler.scoring import collate, completion_hidden
from introllm.training.config import DataConfig
from introllm.training.data import encode_prompt, load_problems
from introllm.training.vllm_rollout import VLLMRollouts


@torch.no_grad()
def pit_values(model, head, seqs, gen: torch.Generator, chunk: int = 16) -> dict[str, np.ndarray]:
    """The randomized PIT values of every recorded token, gate decision and z of ``seqs``."""
    lm_head = model.get_output_embeddings()
    out = {"token": [], "gate": [], "z": []}
    for start in range(0, len(seqs), chunk):
        b = collate(seqs[start : start + chunk])
        h = completion_hidden(model, b)  # [n, T, d]
        m = b.mask.bool()
        p = torch.softmax(lm_head(h).float() / b.tau[..., None], -1)  # [n, T, V]
        p_sorted, order = p.sort(-1, descending=True)
        rank = (order == b.targets[..., None]).float().argmax(-1, keepdim=True)  # y_t's place in the order
        above = (p_sorted.cumsum(-1).gather(-1, rank) - p_sorted.gather(-1, rank)).squeeze(-1)
        p_y = p.gather(-1, b.targets[..., None]).squeeze(-1)
        v = torch.rand(p_y.shape, generator=gen)
        out["token"].append((above + v * p_y)[m])
        u = head(h)
        p_keep = 1 - H.update_prob(u)
        v = torch.rand(p_keep.shape, generator=gen)
        out["gate"].append(torch.where(b.updated, p_keep + v * (1 - p_keep), v * p_keep)[m])
        alpha, beta = H.concentrations(u)
        sel = m & b.updated
        out["z"].append(
            torch.from_numpy(
                stats.beta.cdf(b.z[sel].double().numpy(), alpha[sel].double().numpy(), beta[sel].double().numpy())
            )
        )
    return {k: torch.cat(v).double().numpy() for k, v in out.items()}


def pit_of_scored(head, seqs, scores, gen: torch.Generator) -> dict[str, np.ndarray]:
    """As ``pit_values``, from each sequence's own (logits [T, V], h [T, d]) (``scores``)."""
    out = {"token": [], "gate": [], "z": []}
    for seq, (logits, h) in zip(seqs, scores):
        tau = torch.tensor(seq.trace.tau, dtype=torch.float32)
        targets = torch.tensor(seq.token_ids)
        updated = torch.tensor(seq.trace.updated)
        p = torch.softmax(logits.float() / tau[:, None], -1)
        p_sorted, order = p.sort(-1, descending=True)
        rank = (order == targets[:, None]).float().argmax(-1, keepdim=True)
        above = (p_sorted.cumsum(-1).gather(-1, rank) - p_sorted.gather(-1, rank)).squeeze(-1)
        p_y = p.gather(-1, targets[:, None]).squeeze(-1)
        out["token"].append(above + torch.rand(p_y.shape, generator=gen) * p_y)
        u = head(h.float())
        p_keep = 1 - H.update_prob(u)
        v = torch.rand(p_keep.shape, generator=gen)
        out["gate"].append(torch.where(updated, p_keep + v * (1 - p_keep), v * p_keep))
        alpha, beta = H.concentrations(u)
        z = torch.tensor(seq.trace.z, dtype=torch.float64)
        out["z"].append(
            torch.from_numpy(stats.beta.cdf(z[updated].numpy(), alpha[updated].double(), beta[updated].double()))
        )
    return {k: torch.cat(v).double().numpy() for k, v in out.items()}


def report(name: str, seqs, u: dict[str, np.ndarray]) -> None:
    tau = np.mean([t for s in seqs for t in s.trace.tau])
    print(
        f"{name}: {len(seqs)} completions, {len(u['token'])} tokens, mean length "
        f"{np.mean([len(s.token_ids) for s in seqs]):.1f}, mean tau {tau:.3f}"
    )
    for kind, values in u.items():
        ks = stats.kstest(values, "uniform")
        deciles = np.histogram(values, bins=10, range=(0, 1))[0] / max(len(values), 1)
        top = stats.binomtest(int(np.sum(values > 0.99)), len(values), 0.01) if len(values) else None
        print(
            f"  {kind:<5} n={len(values):>6}  KS D {ks.statistic:.4f} p {ks.pvalue:.3f};  above 0.99: "
            f"{top.statistic:.4f} (0.01 expected) p {top.pvalue:.3g};  deciles {' '.join(f'{d:.3f}' for d in deciles)}"
        )


@torch.no_grad()
def probe_llamacpp(samples: int, tokens: int) -> None:
    from introllm.sampler.llamacpp_engine import load_llamacpp

    engine, tokenizer, path = load_llamacpp(None, None, max_batch=samples + 1)
    data = DataConfig(dataset="experiments/data/arithmetic-train.jsonl")
    problems, _ = load_problems(data)
    prompts = [encode_prompt(p, data, tokenizer) for p in problems[:8]]
    print(f"{path.name}: 8 prompts x {samples} completions x <= {tokens} tokens, learned policy, llama.cpp")
    for name, top_p in (("llamacpp", 1.0), ("llamacpp, top_p 0.98 (control: must fail)", 0.98)):
        seqs, scores = [], []
        for i, prompt in enumerate(prompts):
            params = SamplingParams(max_new_tokens=tokens, policy="learned", seed=1000 + i, top_p=top_p)
            for seq in engine.generate([prompt], params, n=samples)[0]:
                seqs.append(seq)
                scores.append(engine.score(prompt, seq.token_ids))
        report(name, seqs, pit_of_scored(engine.head, seqs, scores, torch.Generator().manual_seed(0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="model + head to sample with [the embedded default]")
    ap.add_argument("--samples", type=int, default=64, help="completions per prompt per engine [64]")
    ap.add_argument("--tokens", type=int, default=48, help="most new tokens per completion [48]")
    ap.add_argument("--backend", choices=("vllm", "llamacpp"), default="vllm", help="the engine probed [vllm]")
    args = ap.parse_args()
    if args.backend == "llamacpp":
        return probe_llamacpp(args.samples, args.tokens)
    ck = load_model(args.checkpoint, device="cpu", dtype="float32")
    data = DataConfig(dataset="experiments/data/arithmetic-train.jsonl")
    problems, _ = load_problems(data)
    prompts = [encode_prompt(p, data, ck.tokenizer) for p in problems[:8]]
    vllm = VLLMRollouts(
        args.checkpoint or default_checkpoint(),
        ck.model,
        ck.head,
        memory=0.05,
        dtype="float32",
        eager=True,
        max_batch=args.samples,
        engine_args={"max_model_len": max(map(len, prompts)) + args.tokens + 8},
    )
    torch_engine = Engine(ck.model, ck.head)
    runs = {
        "vllm": (vllm, 1.0),
        "torch": (torch_engine, 1.0),
        "torch, top_p 0.98 (control: must fail)": (torch_engine, 0.98),
    }
    print(
        f"{ck.path}: 8 prompts x {args.samples} completions x <= {args.tokens} tokens per engine, learned policy, float32"
    )
    for name, (engine, top_p) in runs.items():
        seqs = []
        for i, prompt in enumerate(prompts):
            params = SamplingParams(max_new_tokens=args.tokens, policy="learned", seed=1000 + i, top_p=top_p)
            seqs += engine.generate([prompt], params, n=args.samples)[0]
        report(name, seqs, pit_values(ck.model, ck.head, seqs, torch.Generator().manual_seed(0)))


if __name__ == "__main__":
    main()
