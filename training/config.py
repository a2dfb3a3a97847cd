"""Training configuration: one typed dataclass per concern, validated on construction.

Precedence: field defaults < a TOML or JSON file (``--config``) < command-line flags. The file has
one table per section (``[data]``, ``[rollout]``, ``[method]``, ``[optim]``, ``[run]``); every
field is also a flag of ``introllm train`` with the field name in kebab case (``group_size`` ->
``--group-size``), whose help text is the docstring under the field.

Defaults follow the paper's Table 5 where they fit this project's default job (a 135M model on a
2-core CPU): learning rates 1e-6 / 5e-5, group size 8, tau in [0.6, 1.5], AdamW. The batch size
(128 prompts) and maximum length (3072 tokens) do not fit a CPU run in minutes; their defaults
are 4 prompts and 48 new tokens, and the paper's values are one flag away.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

REPORT_TO = ("none", "tensorboard", "wandb", "all")
"""Values of ``--report-to`` (training.tracking sends the figures)."""


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the field."""


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass
class DataConfig:
    dataset: str = "rg:basic_arithmetic"
    """Training problems: a local .jsonl/.json/.parquet/.csv file, rg:<task> for a reasoning-gym
    generator, rg:<task>,<task>,... for a mix of generators (num_problems of each), or a Hugging
    Face dataset name (needs a reachable hub)."""
    prompt_field: str = "question"
    """Field holding the problem text (files and hub datasets). 'problem' is tried when absent."""
    answer_field: str = "answer"
    """Field holding the reference answer. A list (OlympiadBench's final_answer) is joined with ', '."""
    answer_boxed: bool = False
    """Take the reference answer from the last \\boxed{...} in answer_field (Minerva Math: --answer-field solution)."""
    split: str = "train"
    """Split of a Hugging Face dataset."""
    num_problems: int = 2000
    """How many problems each reasoning-gym generator makes (files: all rows are used)."""
    rg_args: dict = field(
        default_factory=lambda: {"basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}
    )
    """Keyword arguments of the reasoning-gym generators, as JSON: {"arg": value} for one task, or
    {"task": {"arg": value}, ...} per task of a mix; a task not named uses its generator's own
    defaults. The default makes basic_arithmetic two-term one-digit arithmetic, where SmolLM2-135M
    starts at ~20% accuracy: enough reward to learn from."""
    eval_size: int = 32
    """Problems held out from training for the held-out accuracy (0: none)."""
    template: str = "chat"
    """'chat' wraps the prompt in the model's chat template; 'plain' uses prompt_template as is."""
    instruction: str = "Give only the final answer as 'Answer: <number>'."
    """Answer-format instruction appended to every problem."""
    prompt_template: str = "{problem}\n{instruction}\n"
    """Text of a prompt for template = 'plain' ({problem} and {instruction} are filled in)."""
    system: str = ""
    """System message for the chat template (empty: the template's default)."""
    reward: str = "auto"
    """How answers are checked (binary unless said): auto (rg for rg: data, math otherwise), math
    (math-verify), rg (reasoning-gym's scorer, full credit only), rg-partial (its partial credit
    too), exact (string match of the extracted answer), or your own function as module:function or
    file.py:function, called as fn(completion, answer, metadata) -> float."""
    reward_timeout: float = 5.0
    """Seconds one answer check may take before its worker process is killed (reward 0)."""

    def __post_init__(self) -> None:
        _check(bool(self.dataset), "dataset", "must not be empty")
        _check(self.num_problems >= 1, "num_problems", f"must be >= 1, got {self.num_problems}")
        _check(self.eval_size >= 0, "eval_size", f"must be >= 0, got {self.eval_size}")
        _check(self.template in ("chat", "plain"), "template", f"must be chat or plain, got {self.template!r}")
        from .rewards import reward_names

        _check(
            self.reward in ("auto", *reward_names()) or ":" in self.reward,
            "reward",
            f"must be auto, {', '.join(reward_names())} or your own module:function / file.py:function, got {self.reward!r}",
        )
        _check(self.reward_timeout > 0, "reward_timeout", f"must be > 0 seconds, got {self.reward_timeout}")
        _check(isinstance(self.rg_args, dict), "rg_args", "must be a table of generator arguments")
        if self.template == "plain":
            _check("{problem}" in self.prompt_template, "prompt_template", "must contain {problem}")


VLLM_DTYPES = ("same", "auto", "float32", "bfloat16")
"""Values of RolloutConfig.vllm_dtype; "same" = the training precision."""


@dataclass
class RolloutConfig:
    batch_size: int = 4
    """Prompts per training step, over all processes (paper: 128)."""
    group_size: int = 8
    """G: samples per prompt; advantages are relative within a group (paper: 8)."""
    max_new_tokens: int = 48
    """Most tokens per completion (paper: 3072 tokens of sequence)."""
    tau_min: float = 0.6
    """Lower temperature bound of the learned head (paper: 0.6)."""
    tau_max: float = 1.5
    """Upper temperature bound of the learned head (paper: 1.5)."""
    compile: bool = False
    """torch rollouts through the compiled static-shape decode step (CUDA graphs on a GPU; see
    sampler/compiled.py): compiles once per batch/context size at the start; pays on a GPU."""
    compile_max_len: int = 1024
    """compile: positions per sequence (prompt + completion) of the static KV cache."""
    rollout_backend: str = "torch"
    """Rollout engine: torch (the in-process engine), vllm (a colocated vLLM engine that gets the
    new weights in place after each optimizer step) or auto (vllm on CUDA when installed, else torch)."""
    vllm_memory: float = 0.3
    """vllm: share of the device memory vLLM's KV cache may take (GPU: gpu_memory_utilization;
    CPU: that share of the memory available at start-up, at most 4 GiB), leaving the rest to training."""
    vllm_eager: bool = False
    """vllm: run vLLM without torch.compile / CUDA graphs (starts in seconds, decodes slower). The
    in-place weight sync is verified on CPU both ways (compiled and eager); under CUDA graphs it
    is not verified yet (no GPU run): the logged logp_mismatch shows a failed sync at once."""
    vllm_dtype: str = "same"
    """vllm: precision of vLLM's copy of the model: same (the training precision, run.dtype), auto
    (as serving: on a CPU bfloat16 where it is native, else float32; on a GPU vLLM's choice, the
    checkpoint's dtype), float32 or bfloat16. Rolling out in bfloat16 while training in float32
    is verl's default (``rollout.dtype``): faster rollouts, at the price of a rollout/trainer gap
    that logp_mismatch reports and truncated importance sampling (optim.tis_cap) corrects. The
    sync rounds the trainer's weights to it."""

    def __post_init__(self) -> None:
        _check(
            self.rollout_backend in ("torch", "vllm", "auto"),
            "rollout_backend",
            f"must be torch, vllm or auto, got {self.rollout_backend!r}",
        )
        _check(0 < self.vllm_memory < 1, "vllm_memory", f"must be in (0, 1), got {self.vllm_memory}")
        _check(
            self.vllm_dtype in VLLM_DTYPES,
            "vllm_dtype",
            f"must be one of {', '.join(VLLM_DTYPES)}, got {self.vllm_dtype!r}",
        )
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(
            self.group_size >= 2,
            "group_size",
            f"must be >= 2 (advantages compare samples of a group), got {self.group_size}",
        )
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(
            not self.compile or self.compile_max_len > self.max_new_tokens,
            "compile_max_len",
            f"must exceed max_new_tokens ({self.max_new_tokens}), got {self.compile_max_len}",
        )
        _check(
            0 < self.tau_min < self.tau_max,
            "tau_min",
            f"need 0 < tau_min < tau_max, got tau_min={self.tau_min}, tau_max={self.tau_max}",
        )


@dataclass
class MethodConfig:
    method: str = "introllm"
    """Training method: introllm, grpo, ead, tampo, prompt-level, always-update."""
    fixed_tau: float = 1.0
    """grpo: the fixed sampling temperature (the paper compares 0.6, 1.0 and 1.2)."""
    ead_tau_start: float = 1.2
    """ead: starting temperature (paper: 1.2)."""
    ead_tau_min: float = 0.1
    """ead: floor of the annealed temperature (paper: 0.1)."""
    ead_c0: float = 25.0
    """ead: initial decay coefficient c0 of gamma_n = exp(-(c0 / L_avg) n / N) (paper: 25)."""
    ead_warmup_tokens: int = 10
    """ead: leading tokens kept at tau_start (paper: 10)."""
    tampo_top_p: float = 0.9
    """tampo: nucleus of the meta-policy a temperature is drawn from (paper: 0.9)."""
    tampo_warmup: float = 0.1
    """tampo: fraction of the steps sampled at tau = 1.0 before the meta-policy is used (paper: 10%)."""
    tampo_ema: float = 0.9
    """tampo: EMA factor of the meta-policy update (paper: 0.9)."""
    freeze_model: bool = False
    """Head-only training: learn the temperature head alone on a frozen base model (step B only,
    hidden states under no-grad, no model optimizer); checkpoints hold the head files and the base
    model's fingerprint, not a copy of the base weights. Needs a method that trains the head."""
    head_init: str = "fresh"
    """Where the temperature head starts: fresh (the paper's initialisation, P(update) = 0.5 and z ~
    Uniform, its weights drawn with the run's seed, so seeds differ in their heads too; seed 0 is
    the head the embedded checkpoint carries) or checkpoint (the start checkpoint's own head, to
    go on training it). A resumed run always continues its own head."""
    null_control: bool = False
    """A null control: the rewards of each step are shuffled over its samples (with a generator
    seeded by run seed and step) before the advantages, so they carry no information about the
    temperatures or tokens that earned them; every other setting as in the real run. A head
    trained so moves only by noise: its spread over seeds is the yardstick of a real head's."""
    tampo_sharpness: float = 5.0
    """tampo: inverse temperature of the softmax that turns a step's temperature-specific
    advantages into a target distribution (our choice; the paper does not give one)."""

    def __post_init__(self) -> None:
        from .methods import method_names

        _check(
            self.method in method_names(),
            "method",
            f"unknown method {self.method!r}; valid: {', '.join(method_names())}",
        )
        _check(math.isfinite(self.fixed_tau) and self.fixed_tau > 0, "fixed_tau", f"must be > 0, got {self.fixed_tau}")
        _check(
            0 < self.ead_tau_min <= self.ead_tau_start,
            "ead_tau_min",
            f"need 0 < ead_tau_min <= ead_tau_start, got {self.ead_tau_min}, {self.ead_tau_start}",
        )
        _check(self.ead_c0 >= 0, "ead_c0", f"must be >= 0, got {self.ead_c0}")
        _check(self.ead_warmup_tokens >= 0, "ead_warmup_tokens", f"must be >= 0, got {self.ead_warmup_tokens}")
        _check(0 < self.tampo_top_p <= 1, "tampo_top_p", f"must be in (0, 1], got {self.tampo_top_p}")
        _check(0 <= self.tampo_warmup < 1, "tampo_warmup", f"must be in [0, 1), got {self.tampo_warmup}")
        _check(0 <= self.tampo_ema < 1, "tampo_ema", f"must be in [0, 1), got {self.tampo_ema}")
        _check(self.tampo_sharpness > 0, "tampo_sharpness", f"must be > 0, got {self.tampo_sharpness}")
        _check(
            self.head_init in ("fresh", "checkpoint"),
            "head_init",
            f"must be fresh or checkpoint, got {self.head_init!r}",
        )
        from .methods import build_method_class

        _check(
            not self.freeze_model or build_method_class(self.method).trains_head,
            "freeze_model",
            f"head-only training needs a method that learns the head (introllm, always-update, prompt-level), got {self.method!r}",
        )


@dataclass
class OptimConfig:
    model_lr: float = 1e-6
    """AdamW learning rate of the token policy (the model) (paper: 1e-6). 0 freezes the model."""
    head_lr: float = 5e-5
    """AdamW learning rate of the temperature head (paper: 5e-5)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (both optimizers)."""
    adam_betas: tuple = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many steps, constant afterwards."""
    clip_eps: float = 0.2
    """epsilon of the clipped surrogate (eq. 4)."""
    max_grad_norm: float = 1.0
    """Clip each optimizer's gradient to this global norm (0: off)."""
    kl_coef: float = 0.0
    """Weight of a KL penalty to the frozen initial model (k3 estimator); 0 = off, no reference copy."""
    ppo_epochs: int = 1
    """Gradient steps per batch of rollouts; the importance ratio is exactly 1 on the first."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass; gradients are accumulated to the full batch's."""
    gradient_checkpointing: bool = False
    """Recompute the model's activations in the backward pass (less memory, ~30% more time)."""
    mask_truncated: bool = False
    """Leave completions cut off at max_new_tokens out of the loss."""
    tis_cap: float = 2.0
    """Truncated importance sampling: each token's loss term is weighted by
    min(pi_train / pi_rollout, tis_cap), the trainer's recomputed probability over the one the
    rollout engine reported (1 up to float error with torch rollouts). 0 = off."""

    def __post_init__(self) -> None:
        _check(self.model_lr >= 0, "model_lr", f"must be >= 0, got {self.model_lr}")
        _check(self.head_lr >= 0, "head_lr", f"must be >= 0, got {self.head_lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        _check(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            f"need two values in [0, 1), got {self.adam_betas}",
        )
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(0 < self.clip_eps < 1, "clip_eps", f"must be in (0, 1), got {self.clip_eps}")
        _check(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _check(self.kl_coef >= 0, "kl_coef", f"must be >= 0, got {self.kl_coef}")
        _check(self.ppo_epochs >= 1, "ppo_epochs", f"must be >= 1, got {self.ppo_epochs}")
        _check(self.tis_cap >= 0, "tis_cap", f"must be >= 0 (0 = off), got {self.tis_cap}")
        _check(self.micro_batch_size >= 1, "micro_batch_size", f"must be >= 1, got {self.micro_batch_size}")


@dataclass
class RunConfig:
    model: str = ""
    """Checkpoint directory to start from (empty: the embedded SmolLM2-135M-Instruct with its head)."""
    output: str = "runs/introllm"
    """Run directory: metrics.jsonl, samples.jsonl, checkpoint-N/, final/."""
    steps: int = 40
    """Training steps (one batch of rollouts each)."""
    seed: int = 0
    """Seed of data order and rollouts: equal seeds give equal runs."""
    save_every: int = 10
    """Write a resumable checkpoint every this many steps (0: only the final one)."""
    eval_every: int = 0
    """Measure held-out accuracy every this many steps (0: at the start and the end only)."""
    eval_samples: int = 4
    """Samples per held-out problem (accuracy is their mean, Avg@k)."""
    sample_every: int = 5
    """Write one group's completions with their traces to samples.jsonl every this many steps."""
    device: str = "auto"
    """auto (GPU if present), cpu or cuda."""
    dtype: str = "float32"
    """Training precision of the model: float32, bfloat16, or auto (as serving: bfloat16 on GPU and
    on CPUs with native bfloat16, else float32). The default stays float32: the optimizer updates
    the weights in place, and bfloat16 weights without a float32 master copy lose small updates."""
    trust_remote_code: bool = False
    """Allow a checkpoint's own Python code (off by default)."""
    report_to: str = field(default="none", metadata={"choices": REPORT_TO})
    """Experiment trackers that get every metrics.jsonl figure each step and the config: none,
    tensorboard (event files in OUTPUT/<run name>/), wandb (W&B; WANDB_MODE=offline works without
    network) or all. Extras: pip install 'introllm[tensorboard]' / 'introllm[wandb]'."""
    overwrite: bool = False
    """Replace an existing run directory instead of refusing to start."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(0 <= self.seed < 2**31, "seed", f"must be in [0, 2**31), got {self.seed}")
        for name in ("save_every", "eval_every", "sample_every"):
            _check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        _check(self.eval_samples >= 1, "eval_samples", f"must be >= 1, got {self.eval_samples}")
        _check(
            self.dtype in ("auto", "float32", "bfloat16"),
            "dtype",
            f"must be auto, float32 or bfloat16, got {self.dtype!r}",
        )
        _check(bool(self.output), "output", "must not be empty")
        _check(
            self.report_to in REPORT_TO, "report_to", f"must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}"
        )


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "rollout": RolloutConfig,
    "method": MethodConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


@dataclass
class TrainConfig:
    """Everything a training run needs; written to DIR/config.json so a run can be repeated."""

    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.method.freeze_model:
            _check(
                self.optim.kl_coef == 0,
                "kl_coef",
                "must be 0 with freeze_model (the base does not move, there is nothing to regularise)",
            )
            _check(self.optim.head_lr > 0, "head_lr", "must be > 0 with freeze_model (the head is all that learns)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a flat table of field names (``{"group_size": 8, "head_lr": 1e-3}``: the names
        of ``introllm train``'s flags with underscores, as an experiment's [train] table holds them),
        each routed to its section; an unknown name is a ConfigError that names it."""
        owner = {f.name: section for section, c in SECTIONS.items() for f in dataclasses.fields(c)}
        bad = sorted(set(values) - set(owner))
        if bad:
            raise ConfigError(f"unknown train flag(s) {', '.join(bad)}")
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            sections[owner[key]][key] = value
        return cls.from_dict(sections)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from {section: {field: value}}; unknown sections or fields are errors that name them."""
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
        parts = {}
        for name, section in SECTIONS.items():
            given = dict(values.get(name) or {})
            valid = {f.name for f in dataclasses.fields(section)}
            bad = sorted(set(given) - valid)
            if bad:
                raise ConfigError(f"unknown field(s) in [{name}]: {', '.join(bad)}")
            parts[name] = section(**given)
        return cls(**parts)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Sections of a TOML or JSON config file (never executed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(
            f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table of sections")
    return values
