"""Evaluation: k samples per problem, checked like training rewards; Avg@k and Pass@k overall and
per subset (paper §5, Table 1).

Benchmark files are JSONL, one problem per line:

    {"problem": "What is 3 + 4?", "answer": "7", "level": "Level 1", "subject": "Prealgebra", "id": "p-1"}

``problem`` (or ``question``) and ``answer`` are required; ``level``, ``subject`` and ``id`` are
optional and give the per-subset rows. MATH-500, AIME 2024, AMC 2023, Minerva, OlympiadBench and
Omni-Math files in this shape work as they are (field names are flags); ``rg:<task>`` evaluates on
a reasoning-gym generator.

Output: one JSONL record per sample (text, extracted answer, correctness, per-token trace) and a
summary JSON beside it (``FILE.summary.json``) that ``introllm compare`` reads.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, DataConfig


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)
    (Chen et al., 2021), as a stable product.

    >>> pass_at_k(2, 1, 1)
    0.5
    >>> pass_at_k(8, 1, 8)
    1.0
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def avg_at_k(correct: list[bool]) -> float:
    """Avg@k: the mean accuracy of a problem's samples (all n of them, an unbiased estimate)."""
    return sum(correct) / len(correct)


@dataclass
class EvalConfig:
    checkpoint: str = field(default="", metadata={"metavar": "DIR"})
    """Checkpoint directory (default: the embedded SmolLM2-135M-Instruct)."""
    head: str = field(default="", metadata={"metavar": "PATH|init"})
    """Temperature head to plug on: a head directory (e.g. a head-only training run's final/), 'init'
    (the untrained start), or empty for the checkpoint's own (the embedded model: the trained default
    head). A head for another hidden size or base model is refused."""
    k: int = 8
    """k of Avg@k and Pass@k."""
    n: int = 0
    """Samples per problem (0: k). With n > k, Pass@k uses the unbiased estimator."""
    policy: str = "learned"
    """Temperature policy of the samples: learned, fixed:T, greedy, ead, tampo, ..., meanshift (fixed
    at the learned policy's token-mean tau on this benchmark) or mean-matched:T (the learned policy's
    temperatures moved so that their token mean is T)."""
    backend: str = field(default="torch", metadata={"choices": ("torch", "llamacpp")})
    """torch: the in-process PyTorch engine; llamacpp: llama.cpp (--checkpoint FILE.gguf, or the
    embedded model from its GGUF as shipped; needs introllm[llamacpp])"""
    dtype: str = "auto"
    """auto: a trained checkpoint in the dtype it was trained in (its saved weights'), anything else as
    serving does (bfloat16 on GPU and on CPUs with native bfloat16, else float32); or float32, bfloat16."""
    max_new_tokens: int = 512
    """Most tokens per sample."""
    limit: int = 0
    """Evaluate only the first this many problems (0: all)."""
    batch_prompts: int = 8
    """Problems decoded together (each with its n samples)."""
    seed: int = 0
    """Seed of the samples (equal seeds give equal samples)."""
    name: str = ""
    """Row name in `introllm compare` (default: run_name of checkpoint, head and policy)."""
    heldout: str = field(default="", metadata={"metavar": "RUN"})
    """A training run directory: evaluate on the problems that run held out (its eval_size, the
    same split as its held-out accuracy), with its data settings, instead of the dataset."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k: must be >= 1, got {self.k}")
        self.n = self.n or self.k
        if self.n < self.k:
            raise ConfigError(f"n: must be >= k ({self.k}), got {self.n}")
        if self.backend not in ("torch", "llamacpp"):
            raise ConfigError(f"backend: must be torch or llamacpp, got {self.backend!r}")
        if self.max_new_tokens < 1 or self.batch_prompts < 1 or self.limit < 0:
            raise ConfigError("max_new_tokens and batch_prompts must be >= 1, limit >= 0")


@dataclass
class Summary:
    name: str
    dataset: str
    checkpoint: str
    policy: str
    k: int
    n: int
    num_problems: int
    avg_at_k: float
    pass_at_k: float
    mean_tokens: float
    by_level: dict[str, dict[str, float]] = field(default_factory=dict)
    by_subject: dict[str, dict[str, float]] = field(default_factory=dict)
    head: str = ""  # --head given to eval ("" = the checkpoint's own / the default head)
    tau_mean: float | None = None  # mean sampling temperature over all generated tokens
    update_rate: float | None = None  # fraction of tokens at which the head drew a new tau
    avg_at_k_ci95: float | None = None  # half-width of a 95 % interval of avg_at_k over problems (normal approximation)


def summarize(
    records: list[dict[str, Any]],
    *,
    k: int,
    name: str = "",
    dataset: str = "",
    checkpoint: str = "",
    policy: str = "",
    head: str = "",
) -> Summary:
    """Avg@k / Pass@k overall and per level and subject, from per-sample records; with per-token
    traces in the records, also the mean tau and the update rate (token-weighted)."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_problem[str(r["problem_id"])].append(r)
    if not by_problem:
        raise ValueError("no records to summarise")
    n = min(len(v) for v in by_problem.values())

    def scores(problems: list[list[dict]]) -> dict[str, float]:
        per_problem = [avg_at_k([bool(s["correct"]) for s in p]) for p in problems]
        avg = statistics.mean(per_problem)
        pas = statistics.mean(pass_at_k(len(p), sum(bool(s["correct"]) for s in p), min(k, len(p))) for p in problems)
        # normal-approximation 95 % interval of Avg@k over problems (problems are the sampling unit)
        half = (
            1.96 * statistics.stdev(per_problem) / math.sqrt(len(per_problem)) if len(per_problem) > 1 else float("nan")
        )
        out = {"avg_at_k": avg, "pass_at_k": pas, "num_problems": len(problems), "avg_at_k_ci95": half}
        out.update(_trace_stats([s for p in problems for s in p]))
        return out

    groups = list(by_problem.values())
    subsets: dict[str, dict[str, list]] = {"level": defaultdict(list), "subject": defaultdict(list)}
    for p in groups:
        for key in subsets:
            if p[0].get(key) is not None:
                subsets[key][str(p[0][key])].append(p)
    overall = scores(groups)
    return Summary(
        name=name,
        dataset=dataset,
        checkpoint=checkpoint,
        policy=policy,
        k=k,
        n=n,
        num_problems=len(groups),
        avg_at_k=overall["avg_at_k"],
        pass_at_k=overall["pass_at_k"],
        head=head,
        tau_mean=overall.get("tau_mean"),
        update_rate=overall.get("update_rate"),
        avg_at_k_ci95=overall["avg_at_k_ci95"],
        mean_tokens=statistics.mean(r["num_tokens"] for r in records),
        by_level={lv: scores(ps) for lv, ps in sorted(subsets["level"].items())},
        by_subject={sj: scores(ps) for sj, ps in sorted(subsets["subject"].items())},
    )


def heldout_problems(run_dir: str | Path):
    """(data config, held-out problems) of a training run, rebuilt from its config.json exactly as
    the trainer split them (load_problems with the run's seed). Raises ValueError."""
    from .config import TrainConfig
    from .data import load_problems

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"--heldout {run_dir}: not a training run directory (no config.json)")
    cfg = TrainConfig.from_dict(json.loads(path.read_text()))
    if cfg.data.eval_size == 0:
        raise ValueError(f"--heldout {run_dir}: that run held nothing out (eval_size 0)")
    return cfg.data, load_problems(cfg.data, seed=cfg.run.seed)[1]


def _trace_stats(records: list[dict]) -> dict[str, float]:
    """Token-weighted mean tau and update rate of records that carry traces ({} when none do)."""
    taus = [t for r in records for t in r.get("tau") or []]
    updated = [u for r in records for u in r.get("updated") or []]
    if not taus:
        return {}
    return {"tau_mean": sum(taus) / len(taus), "update_rate": sum(map(bool, updated)) / max(len(updated), 1)}


def _label(path: str) -> str:
    """A checkpoint's or head's short name: a run's final/ or checkpoint-N/ keeps its run directory."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.name == "final" or p.name.startswith("checkpoint-") else p.name


def run_name(checkpoint: str, head: str, policy: str) -> str:
    """Default row name of an evaluation: checkpoint (a run's final/ as run/final), the head when
    one was plugged on, and the policy, e.g. 'smollm2-135m-instruct + head init (learned)'."""
    name = _label(checkpoint) if checkpoint else "smollm2-135m-instruct"
    if head:
        name += f" + head {head if head == 'init' else _label(head)}"
    return f"{name} ({policy})"


def evaluate(
    cfg: EvalConfig,
    data: DataConfig,
    output: str | Path,
    *,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> Summary:
    """Sample, check, write records and summary; returns the summary."""
    import torch

    from introllm.sampler import Engine, SamplingParams
    from introllm.sampler.models import load_model

    from .data import encode_prompt, read_problems
    from .rewards import RewardWorker, load_scorer, resolve_reward

    reward_name = resolve_reward(data.reward, data.dataset)
    load_scorer(reward_name)
    problems = read_problems(data) if not cfg.heldout else heldout_problems(cfg.heldout)[1]
    if cfg.limit:
        problems = problems[: cfg.limit]
    if cfg.backend == "llamacpp":
        from introllm.sampler.llamacpp_engine import load_llamacpp

        engine, tokenizer, _ = load_llamacpp(
            cfg.checkpoint or None,
            cfg.head or None,
            max_batch=min(256, cfg.batch_prompts * cfg.n),
            context=cfg.max_new_tokens + 2048,
        )
    else:
        dtype = eval_dtype(cfg.checkpoint, cfg.dtype)
        ck = load_model(cfg.checkpoint or None, device="auto", dtype=dtype, head=cfg.head or None)
        engine, tokenizer = Engine(ck.model, ck.head), ck.tokenizer
    engine.policy(cfg.policy)  # an unknown policy fails here, before any sampling
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    correct_so_far = 0
    tmp = output.with_name(output.name + ".tmp")
    with RewardWorker(timeout=data.reward_timeout) as worker, open(tmp, "w") as f, torch.inference_mode():
        for start in range(0, len(problems), cfg.batch_prompts):
            batch = problems[start : start + cfg.batch_prompts]
            ids = [encode_prompt(p, data, tokenizer) for p in batch]
            params = [
                SamplingParams(
                    max_new_tokens=cfg.max_new_tokens, policy=cfg.policy, seed=cfg.seed * 1_000_003 + start + i
                )
                for i in range(len(batch))
            ]
            for problem, group in zip(batch, engine.generate(ids, params, n=cfg.n)):
                texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in group]
                result = worker.score(
                    reward_name, texts, [problem.answer] * len(texts), [problem.metadata] * len(texts)
                )
                for j, (s, text, reward) in enumerate(zip(group, texts, result.rewards)):
                    rec = eval_record(problem, j, s, text, reward, tokenizer)
                    correct_so_far += rec["correct"]
                    records.append(rec)
                    f.write(json.dumps(rec) + "\n")
            if on_progress:
                on_progress(
                    min(start + cfg.batch_prompts, len(problems)), len(problems), correct_so_far / max(len(records), 1)
                )
    tmp.replace(output)
    name = cfg.name or run_name(cfg.checkpoint, cfg.head, cfg.policy)
    summary = summarize(
        records,
        k=cfg.k,
        name=name,
        dataset=data.dataset,
        checkpoint=cfg.checkpoint or "embedded",
        policy=cfg.policy,
        head=cfg.head,
    )
    summary_path(output).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def eval_dtype(checkpoint: str, dtype: str) -> str:
    """The dtype an evaluation loads ``checkpoint`` in: ``dtype`` unless it is auto; for auto, a
    checkpoint written by ``introllm train`` (it holds trainer_state/) in the dtype of its saved
    weights (config.json), so that a float32 run's small updates are not rounded away in
    bfloat16; any other checkpoint "auto" (as serving)."""
    if dtype != "auto" or not checkpoint:
        return dtype
    path = Path(checkpoint)
    if not (path / "trainer_state").is_dir() or not (path / "config.json").is_file():
        return "auto"
    saved = json.loads((path / "config.json").read_text())
    saved = saved.get("dtype") or saved.get("torch_dtype")
    return saved if saved in ("float32", "bfloat16", "float16") else "auto"


def eval_record(problem, sample: int, seq, text: str, reward: float, tokenizer) -> dict[str, Any]:
    """One evaluation sample as a JSON record, the same for ``introllm eval`` and the trainer's
    held-out evaluations (what ``compare``, ``plot --eval`` and the experiment report read):
    the problem's identity and answer, the extracted answer, correctness, the text, and per token
    its piece, tau, update flag and the entropy of the distribution it was drawn from.

    problem: data.Problem; seq: sampler.Sequence (its trace); reward: the checker's score."""
    from introllm.sampler.text import token_pieces

    from .answers import extract_answer

    return {
        "problem_id": problem.id,
        "sample": sample,
        "level": problem.level,
        "subject": problem.subject,
        "answer": problem.answer,
        "extracted": extract_answer(text),
        "correct": reward >= 1.0,
        "reward": reward,
        "text": text,
        "finish_reason": seq.finish_reason,
        "num_tokens": len(seq.token_ids),
        "tokens": token_pieces(tokenizer, seq.token_ids, skip_special_tokens=False),
        "tau": [round(t, 4) for t in seq.trace.tau],
        "updated": seq.trace.updated,
        "entropy": [round(e, 3) if e == e else None for e in seq.trace.entropy],
    }


def summary_path(records_path: str | Path) -> Path:
    p = Path(records_path)
    return p.with_name(p.name.removesuffix(".jsonl") + ".summary.json")


def load_summary(path: str | Path) -> Summary:
    """A summary file, or the summary beside a records file."""
    p = Path(path)
    if not p.name.endswith(".summary.json"):
        p = summary_path(p)
    if not p.is_file():
        raise ValueError(f"{path}: no evaluation summary (expected {p}, written by introllm eval)")
    try:
        return Summary(**json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{p} is not an evaluation summary: {e}") from None


def benchmark_name(dataset: str) -> str:
    return dataset[3:] if dataset.startswith("rg:") else Path(dataset).name.removesuffix(".jsonl").removesuffix(".json")


def _identity(s: Summary) -> tuple:
    return (s.checkpoint, s.head, s.policy)


def distinct_rows(summaries: list[Summary]) -> list[Summary]:
    """Summaries with row names that never merge different evaluations: two results with one name
    but another checkpoint, head or policy get the checkpoint (and head) appended to their names.
    Two results of the same evaluation on the same benchmark are an error naming both."""
    from dataclasses import replace

    identities: dict[str, set] = defaultdict(set)
    for s in summaries:
        identities[s.name].add(_identity(s))
    out = []
    for s in summaries:
        if len(identities[s.name]) > 1:
            where = s.checkpoint + (f" + head {s.head}" if s.head else "")
            s = replace(s, name=f"{s.name} [{where}, {s.policy}]")
        out.append(s)
    seen: dict[tuple, Summary] = {}
    for s in out:
        key = (s.name, benchmark_name(s.dataset))
        if key in seen:
            raise ValueError(
                f"two results for {s.name!r} on {key[1]} (checkpoint {s.checkpoint}); give them different --name "
                "or compare one of them"
            )
        seen[key] = s
    return out


def compare_table(summaries: list[Summary]) -> str:
    """Markdown table in the shape of the paper's Table 1: methods x benchmarks, Avg@k and Pass@k
    in percent, the best of each column in bold, and the average over benchmarks."""
    if not summaries:
        raise ValueError("nothing to compare")
    summaries = distinct_rows(summaries)
    benches = list(dict.fromkeys(benchmark_name(s.dataset) for s in summaries))
    methods = list(dict.fromkeys(s.name for s in summaries))
    ks = {s.k for s in summaries}
    k = ks.pop() if len(ks) == 1 else None
    cell: dict[tuple[str, str], Summary] = {(s.name, benchmark_name(s.dataset)): s for s in summaries}
    columns = [(b, metric) for b in benches for metric in ("avg_at_k", "pass_at_k")]
    if len(benches) > 1:
        columns += [("Average", "avg_at_k"), ("Average", "pass_at_k")]

    def value(m: str, b: str, metric: str) -> float | None:
        if b == "Average":
            vals = [value(m, x, metric) for x in benches]
            return None if None in vals else statistics.mean(vals)
        s = cell.get((m, b))
        return None if s is None else 100 * getattr(s, metric)

    best = {c: max((v for m in methods if (v := value(m, *c)) is not None), default=None) for c in columns}
    label = {"avg_at_k": f"Avg@{k}" if k else "Avg@k", "pass_at_k": f"Pass@{k}" if k else "Pass@k"}
    lines = [
        "| Method | " + " | ".join(f"{b} {label[metric]}" for b, metric in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for m in methods:
        cells = []
        for c in columns:
            v = value(m, *c)
            text = "–" if v is None else f"{v:.2f}"
            cells.append(f"**{text}**" if v is not None and v == best[c] and len(methods) > 1 else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
