"""The training loop (paper Algorithm 1), read top to bottom:

    rollout -> reward -> advantage -> method hook -> step A + step B -> log -> save

It runs under Hugging Face accelerate: one process or ``accelerate launch`` over several (DDP).
Each process rolls out its share of the step's prompts; the model and head gradients are
averaged across processes by the DDP wrapper; only the main process writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from introllm.sampler import build_policy
from introllm.sampler.checkpoint import (
    atomic_directory,
    directory_size,
    format_size,
    is_write_temporary,
    load_checkpoint,
    load_head,
    remove_stale_temporaries,
    write_head,
)
from introllm.sampler.head import HeadConfig, TemperatureHead
from introllm.sampler.models import default_checkpoint, resolve_device, resolve_dtype
from introllm.sampler.text import token_pieces

from . import rollout as R
from .config import ConfigError, TrainConfig
from .data import ProblemStream, check_data_config, encode_prompt, load_problems
from .methods import build_method
from .rewards import RewardWorker, load_scorer, resolve_reward
from .state import (
    CHECKPOINT_RE,
    CheckpointWriteError,
    check_resumable,
    is_disk_full,
    latest_checkpoint,
    read_trainer_state,
    restore_optimizers_and_rng,
    write_trainer_state,
)
from .tracking import check_trackers, flat_config, flat_metrics
from .update import PolicyScorer, update
from .vllm_rollout import build_rollout_engine

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2  # older checkpoint-N directories are deleted (each holds the full model)


def check_output(cfg: TrainConfig, resume: bool) -> None:
    out = Path(cfg.run.output)
    if (
        not resume
        and not cfg.run.overwrite
        and out.exists()
        and any(not is_write_temporary(p.name) for p in out.iterdir())
    ):
        raise ConfigError(
            f"output: {out} exists and is not empty; pass --overwrite to replace it or --resume {out} to continue it"
        )


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> Path:
    out = Path(cfg.run.output)
    check_output(cfg, resume)
    if not resume and out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(cfg: TrainConfig, *, resume_from: str | None = None, show_progress: bool | None = None) -> Path:
    """Run training; returns the final checkpoint directory (``output/final``)."""
    from accelerate import Accelerator

    check_data_config(cfg.data)
    check_output(cfg, resume=bool(resume_from))  # before minutes of loading, not after
    reward_name = resolve_reward(cfg.data.reward, cfg.data.dataset)
    load_scorer(reward_name)  # a bad reward fails now, not after the model has loaded
    device = resolve_device(cfg.run.device)
    trackers = check_trackers(cfg.run.report_to)  # a missing package fails now, not after loading
    accelerator = Accelerator(cpu=device.type == "cpu", log_with=trackers or None, project_dir=cfg.run.output)
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.rollout.batch_size % world:
        raise ConfigError(f"batch_size: {cfg.rollout.batch_size} prompts do not split over {world} processes")
    main = accelerator.is_main_process
    if not main:  # one process speaks for all
        logging.getLogger("introllm").setLevel(logging.WARNING)
    if main:  # what a killed checkpoint write left (they hold up to a whole checkpoint each)
        for path in remove_stale_temporaries(Path(cfg.run.output)):
            log.warning("removed %s, left by a checkpoint write that was interrupted", path)
    accelerator.wait_for_everyone()

    # ---------------------------------------------------------------- data, model, head, method
    train_set, eval_set = load_problems(cfg.data, seed=cfg.run.seed)
    resume_dir = None
    if resume_from:
        resume_dir = latest_checkpoint(Path(resume_from))
        if resume_dir is None:
            raise ConfigError(f"resume: {resume_from} holds no checkpoint-N with a trainer_state/ directory")
        check_resumable(resume_dir)  # a truncated file: one line naming it and the newest intact one
    frozen = cfg.method.freeze_model
    base_dir = Path(cfg.run.model) if cfg.run.model else default_checkpoint()
    # head-only checkpoints hold no base weights: a resumed head-only run reloads its base
    start = base_dir if frozen else (resume_dir or base_dir)
    dtype = resolve_dtype(cfg.run.dtype, device)
    ck = load_checkpoint(
        start, device=device, dtype=dtype, trust_remote_code=cfg.run.trust_remote_code, require_head=False
    )
    model, tokenizer = ck.model, ck.tokenizer
    if frozen and resume_dir is not None:
        ck.head = load_head(resume_dir, model.config, device, strict=True, model=model)
    if tokenizer is None:
        raise ConfigError(f"model: {start} has no tokenizer files")
    hidden = model.config.get_text_config(decoder=True).hidden_size
    method = build_method(cfg.method, cfg.run.steps)
    head_cfg = HeadConfig(
        hidden, cfg.rollout.tau_min, cfg.rollout.tau_max, min(max(1.0, cfg.rollout.tau_min), cfg.rollout.tau_max)
    )
    fresh = method.trains_head and cfg.method.head_init == "fresh"  # a head no one trains stays as it was
    if resume_dir is None and (fresh or ck.head is None):
        head = fresh_head(head_cfg, cfg.run.seed).to(device)
    else:  # the start checkpoint's own head (head_init = checkpoint), or the resumed run's
        head = ck.head
    head.config = head_cfg  # the bounds are the run's; the weights do not depend on them
    head.to(device=device, dtype=torch.float32)
    _disable_dropout(model)
    if cfg.optim.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.requires_grad_(cfg.optim.model_lr > 0 and not frozen)
    head.requires_grad_(method.trains_head and cfg.optim.head_lr > 0)
    ref_model = None
    if cfg.optim.kl_coef > 0:
        base = Path(cfg.run.model) if cfg.run.model else default_checkpoint()
        ref_model = load_checkpoint(base, device=device, dtype=dtype, require_head=False).model.requires_grad_(False)

    betas = tuple(cfg.optim.adam_betas)
    optimizers = {}
    if cfg.optim.model_lr > 0 and not frozen:
        optimizers["optimizer_model"] = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.optim.model_lr,
            betas=betas,
            weight_decay=cfg.optim.weight_decay,
        )
    if method.trains_head and cfg.optim.head_lr > 0:
        optimizers["optimizer_head"] = torch.optim.AdamW(
            list(head.parameters()), lr=cfg.optim.head_lr, betas=betas, weight_decay=cfg.optim.weight_decay
        )
    scorer = PolicyScorer(model, head if method.trains_head else None, freeze_model=frozen)
    scorer = accelerator.prepare(scorer)
    model.train()
    G, P = cfg.rollout.group_size, cfg.rollout.batch_size // world
    engine, sync_weights, backend = build_rollout_engine(
        cfg.rollout,
        checkpoint=start,
        model=model,
        head=head,
        device=device,
        dtype=cfg.run.dtype,
        model_trains="optimizer_model" in optimizers,
        max_batch=max(P * G, 8),
        world=world,
    )
    stream = ProblemStream(train_set, cfg.run.seed)
    first_step = 0
    if resume_dir is not None:
        state = read_trainer_state(resume_dir)
        restore_optimizers_and_rng(resume_dir, optimizers, state)
        stream.load_state_dict(state["data"])
        method.load_state_dict(state["method"])
        first_step = int(state["step"])
    run_dir = prepare_run_dir(cfg, resume=resume_dir is not None) if main else Path(cfg.run.output)
    accelerator.wait_for_everyone()
    if main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        _truncate_jsonl(run_dir / "metrics.jsonl", first_step)
        _truncate_jsonl(run_dir / "samples.jsonl", first_step)
    if trackers:  # main process only (accelerate); the run's name is its directory's
        accelerator.init_trackers(
            run_dir.name,
            config=flat_config(cfg.to_dict()),
            init_kwargs={"wandb": {"name": run_dir.name, "dir": str(run_dir)}},
        )
    rewards = RewardWorker(timeout=cfg.data.reward_timeout)
    score = functools.partial(rewards.score, reward_name)
    log.info(
        "training %s%s with %s on %s: %d problems (%d held out), %d steps of %d prompts x %d samples, %d process(es) on %s",
        start,
        " (head only, base frozen)" if frozen else "",
        cfg.method.method,
        cfg.data.dataset,
        len(train_set),
        len(eval_set),
        cfg.run.steps,
        cfg.rollout.batch_size,
        G,
        world,
        device,
    )

    def save(step: int, final: bool = False) -> Path:
        target = run_dir / ("final" if final else f"checkpoint-{step:06d}")
        if main:
            try:
                write(target, step)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                raise CheckpointWriteError(_disk_full_message(target, run_dir, model, head, optimizers)) from None
            _prune_checkpoints(run_dir)
        accelerator.wait_for_everyone()
        return target

    def write(target: Path, step: int) -> None:
        with atomic_directory(target) as tmp:  # a failed write leaves no part of target behind
            if frozen:  # the head, the base's fingerprint and digest; not a copy of the base
                write_head(
                    tmp,
                    head,
                    model.config,
                    model,
                    extra={
                        "head_only": True,
                        # the base as the user named it ("embedded": the embedded model), never
                        # a machine's own path to it (a shipped head's JSON travels)
                        "base_checkpoint": cfg.run.model or "embedded",
                        "trained_with": {"method": cfg.method.method, "dataset": cfg.data.dataset, "steps": step},
                    },
                )
            else:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                write_head(tmp, head, model.config, model)
            write_trainer_state(
                tmp,
                optimizers=optimizers,
                state={
                    "step": step,
                    "data": stream.state_dict(),
                    "method": method.state_dict(),
                    "method_name": cfg.method.method,
                    "config": cfg.to_dict(),
                },
            )

    def evaluate(step: int) -> float:
        if not eval_set:
            return float("nan")
        per = -(-len(eval_set) // world)  # contiguous shards: seeds follow the global index, whatever the world size
        shard = eval_set[rank * per : (rank + 1) * per]
        counts = torch.zeros(2, device=device)
        if shard:
            ids = [encode_prompt(p, cfg.data, tokenizer) for p in shard]
            ro = R.collect(
                engine,
                tokenizer,
                shard,
                ids,
                cfg.rollout,
                policy=method.rollout_policy(step),
                seed=cfg.run.seed,
                step=0,
                first_index=10**6 + rank * per,
                score=score,
                group_size=cfg.run.eval_samples,
            )
            counts += torch.tensor([float((ro.rewards >= 1).sum()), float(len(ro.rewards))], device=device)
            _write_eval_records(
                run_dir, step, ro, tokenizer, cfg.run.eval_samples, rank, method.rollout_policy(step), cfg.data.dataset
            )
        correct = accelerator.reduce(counts, "sum")
        return float(correct[0] / correct[1])

    def record(row: dict) -> None:
        """One row of metrics.jsonl, and the same figures to the trackers (report_to)."""
        _append_jsonl(run_dir / "metrics.jsonl", row, main)
        if trackers:
            accelerator.log(flat_metrics(row), step=int(row["step"]))

    # ---------------------------------------------------------------- the loop
    progress = _Progress(
        cfg.run.steps, first_step, enabled=main and (sys.stderr.isatty() if show_progress is None else show_progress)
    )
    try:
        if first_step == 0 and eval_set:
            record({"step": 0, "eval_accuracy": evaluate(0)})
        for step in range(first_step, cfg.run.steps):
            t0 = time.perf_counter()
            for opt in optimizers.values():  # linear warm-up, a pure function of the step
                for g in opt.param_groups:
                    g["lr"] = g.setdefault("initial_lr", g["lr"]) * min(
                        1.0, (step + 1) / max(cfg.optim.warmup_steps, 1)
                    )
            # 1. rollout: G samples of each of this process's prompts
            problems = stream.next(cfg.rollout.batch_size)[rank * P : (rank + 1) * P]
            ids = [encode_prompt(p, cfg.data, tokenizer) for p in problems]
            method.prepare(engine)
            policy_spec = method.rollout_policy(step)
            # 2. reward and 3. advantage (eq. 3), inside collect
            ro = R.collect(
                engine,
                tokenizer,
                problems,
                ids,
                cfg.rollout,
                policy=policy_spec,
                seed=cfg.run.seed,
                step=step,
                first_index=rank * P,
                score=score,
            )
            if cfg.method.null_control:  # rewards that say nothing about what earned them
                ro = R.shuffle_rewards(ro, seed=R.rollout_seed(cfg.run.seed, step, rank))
            t_rollout = time.perf_counter() - t0
            # 4. steps A and B
            stats = update(
                scorer,
                model,
                head if method.trains_head else None,
                build_policy(policy_spec, head) if method.trains_head else None,
                ro.sequences,
                ro.adv,
                optimizers=optimizers,
                optim=cfg.optim,
                pad_id=_pad_id(tokenizer),
                ref_model=ref_model,
                accelerator=accelerator if world > 1 else None,
                with_tau_loglik=method.needs_tau_likelihoods,
            )
            # the new weights into the rollout engine (vLLM's copy; nothing to do for the torch engine)
            sync_seconds = 0.0 if stats.skipped else sync_weights()
            # 5. method hook (EAD's length average, TAMPO's meta-policy) on the whole batch
            gathered = R.SequenceStats.unstack(
                accelerator.gather(R.SequenceStats.of(ro, stats.entropy_sum).stack().to(device)).cpu()
            )
            loglik = accelerator.gather(stats.tau_loglik.to(device)).cpu() if stats.tau_loglik is not None else None
            method_metrics = method.observe(step, adv=gathered.adv.float(), lengths=gathered.length, tau_loglik=loglik)
            # 6. log
            errs = accelerator.reduce(
                torch.tensor([ro.num_reward_errors, ro.num_reward_timeouts], device=device), "sum"
            ).tolist()
            metrics: dict[str, Any] = {"step": step + 1, **R.summarize(gathered, int(errs[0]), int(errs[1]))}
            metrics.update({k: v for k, v in stats.__dict__.items() if k not in ("tau_loglik", "entropy_sum")})
            if world > 1:
                metrics.update(_rollout_gap_over_processes(accelerator, stats))
            metrics.update(method_metrics)
            by_level = _tau_by_level(accelerator, ro, G)
            if by_level:
                metrics["tau_mean_by_level"] = by_level
            metrics.update(
                policy=policy_spec,
                lr_model=_lr(optimizers, "optimizer_model"),
                lr_head=_lr(optimizers, "optimizer_head"),
                rollout_seconds=t_rollout,
                sync_seconds=sync_seconds,
                rollout_backend=backend,
                step_seconds=time.perf_counter() - t0,
            )
            last = step + 1 == cfg.run.steps
            if (cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0) or last:
                metrics["eval_accuracy"] = evaluate(step + 1)
            record(metrics)
            if cfg.run.sample_every and (step % cfg.run.sample_every == 0 or last):
                _append_jsonl(run_dir / "samples.jsonl", _samples(step + 1, ro, tokenizer, G), main)
            progress.update(metrics)
            # 7. save
            if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and not last:
                save(step + 1)
        _check_replicas(accelerator, model, head)
        final = save(cfg.run.steps, final=True)
    finally:
        progress.close()
        rewards.close()
        if trackers:
            accelerator.end_training()
    return final


def fresh_head(config: HeadConfig, seed: int) -> TemperatureHead:
    """The paper's initial head (B.1: P(update) = 0.5, z ~ Uniform(0, 1) for any input) with its
    weights drawn from a generator seeded with ``seed``; seed 0 gives the head the embedded
    checkpoint is converted with (``sampler.models.initial_head``)."""
    head = TemperatureHead(config)
    head.reset_parameters(torch.Generator().manual_seed(seed))
    return head


def _write_eval_records(
    run_dir: Path, step: int, ro: R.Rollout, tokenizer, k: int, rank: int, policy: str, dataset: str
) -> None:
    """The held-out evaluation's samples as ``introllm eval`` records (eval/step-N[.rankR].jsonl,
    with per-token traces) plus, on one process, its summary (per subject: Avg@k with its
    interval, mean tau, update rate): what ``compare`` and ``plot --eval`` read."""
    from .evaluate import eval_record, summarize, summary_path

    records = [
        eval_record(problem, j, ro.sequences[i * k + j], ro.texts[i * k + j], float(ro.rewards[i * k + j]), tokenizer)
        for i, problem in enumerate(ro.problems)
        for j in range(k)
    ]
    out = run_dir / "eval" / (f"step-{step:06d}.jsonl" if rank == 0 else f"step-{step:06d}.rank{rank}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    if rank == 0:
        summary = summarize(
            records,
            k=k,
            name=f"{run_dir.name}/step-{step} ({policy})",
            dataset=dataset,
            checkpoint=f"{run_dir}/step-{step}",
            policy=policy,
        )
        summary_path(out).write_text(json.dumps(dataclasses.asdict(summary), indent=2) + "\n")


def _check_replicas(accelerator, model, head) -> None:
    """Data-parallel processes must hold the same weights; a difference means gradients were not synced."""
    if accelerator.num_processes == 1:
        return
    with torch.no_grad():
        total = torch.stack([p.double().sum() for p in list(model.parameters()) + list(head.parameters())]).sum()
    sums = accelerator.gather(total.reshape(1).to(accelerator.device)).cpu()
    if (sums - sums[0]).abs().max() > 1e-9 * max(1.0, float(sums[0].abs())):
        raise RuntimeError(f"data-parallel processes diverged (weight sums {sums.tolist()})")


def _rollout_gap_over_processes(accelerator, stats) -> dict[str, float]:
    """The sampler-vs-trainer log-prob gaps and TIS figures of every process, not only this one's:
    the max over processes for the maxima (``logp_mismatch``, ``temp_logp_mismatch``), the mean
    over processes for the means and fractions (each process scores the same number of sequences)."""
    keys = (
        "logp_mismatch",
        "logp_mismatch_mean",
        "logp_mismatch_frac",
        "tis_weight_mean",
        "tis_capped_frac",
        "temp_logp_mismatch",
        "temp_logp_mismatch_mean",
    )
    rows = accelerator.gather(
        torch.tensor([[getattr(stats, k) for k in keys]], dtype=torch.float64, device=accelerator.device)
    ).cpu()
    return {
        k: float(rows[:, i].max() if k in ("logp_mismatch", "temp_logp_mismatch") else rows[:, i].mean())
        for i, k in enumerate(keys)
    }


def _tau_by_level(accelerator, ro: R.Rollout, G: int) -> dict[str, float]:
    """Mean tau per difficulty level over the batch (Fig. 5 by difficulty); {} without levels."""
    from accelerate.utils import gather_object

    local = [
        (p.level, sum(s.trace.tau), len(s.trace.tau))
        for i, p in enumerate(ro.problems)
        if p.level is not None
        for s in ro.sequences[i * G : (i + 1) * G]
    ]
    rows = gather_object(local) if accelerator.num_processes > 1 else local
    sums: dict[str, list[float]] = {}
    for level, total, count in rows:
        acc = sums.setdefault(level, [0.0, 0])
        acc[0] += total
        acc[1] += count
    return {level: total / count for level, (total, count) in sorted(sums.items()) if count}


def _disable_dropout(model: torch.nn.Module) -> None:
    """RL ratios assume the policy that sampled is the one scored: no dropout noise in training."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for name in ("attention_dropout", "hidden_dropout", "dropout"):
        if hasattr(model.config, name):
            setattr(model.config, name, 0.0)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def _lr(optimizers, name) -> float:
    return optimizers[name].param_groups[0]["lr"] if name in optimizers else 0.0


def _append_jsonl(path: Path, row: dict, main: bool) -> None:
    if main:
        with open(path, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """On resume, drop records of steps after the checkpoint (they will be redone), atomically."""
    if not path.exists():
        return
    keep = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= last_step
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


def _disk_full_message(target: Path, run_dir: Path, model, head, optimizers) -> str:
    """One line for a checkpoint write that filled the disk: which checkpoint, about how much it
    needs (the previous checkpoint's size, else the tensors it holds) against what is free, and
    the command that continues the run from the newest checkpoint written."""
    import shutil as sh

    previous = [p for p in run_dir.glob("checkpoint-*") if CHECKPOINT_RE.match(p.name) and p != target]
    if previous:
        needed = directory_size(max(previous, key=lambda p: p.name))
    else:
        tensors = [*model.state_dict().values(), *head.state_dict().values()]
        tensors += [v for opt in optimizers.values() for st in opt.state.values() for v in st.values()]
        needed = sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
    free = sh.disk_usage(run_dir).free
    return (
        f"no space left on the device while writing checkpoint {target} (it needs about {format_size(needed)}, "
        f"{format_size(free)} are free in {run_dir}); make room, then continue with: introllm train --resume {run_dir}"
    )


def _prune_checkpoints(run_dir: Path) -> None:
    found = sorted(run_dir.glob("checkpoint-*"))
    for old in found[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _samples(step: int, ro: R.Rollout, tokenizer, G: int) -> dict:
    """The first prompt's group: texts, rewards and per-token traces."""
    problem = ro.problems[0]
    completions = []
    for s, text, r in zip(ro.sequences[:G], ro.texts[:G], ro.rewards[:G].tolist()):
        completions.append(
            {
                "text": text,
                "reward": r,
                "finish_reason": s.finish_reason,
                "tokens": token_pieces(tokenizer, s.token_ids, skip_special_tokens=False),
                "tau": [round(t, 4) for t in s.trace.tau],
                "updated": s.trace.updated,
            }
        )
    return {
        "step": step,
        "id": problem.id,
        "problem": problem.prompt,
        "answer": problem.answer,
        "completions": completions,
    }


class _Progress:
    """A rich progress bar with step, reward, mean tau and ETA on a terminal; one log line per step otherwise."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.bar = total, None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, completed=done, info="")
            self.bar.start()

    def update(self, m: dict) -> None:
        info = f"reward {m['reward']:.3f}  tau {m['tau_mean']:.2f}  upd {m['update_rate']:.2f}  len {m['response_length']:.0f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=m["step"], info=info)
            return
        log.info(
            "step %d/%d  %s  acc %.3f  %.1f s%s",
            m["step"],
            self.total,
            info,
            m["accuracy"],
            m["step_seconds"],
            f"  eval {m['eval_accuracy']:.3f}" if "eval_accuracy" in m else "",
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
