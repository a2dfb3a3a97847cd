"""Training methods by name: which temperature policy the rollouts use, whether the head learns,
and what a method updates between steps (EAD's decay, TAMPO's meta-policy).

    introllm       the paper: learned head (Bernoulli gate + Beta), coordinate ascent
    always-update  ablation: the head draws a new tau at every token (no gate)
    prompt-level   ablation: the head draws one tau per sequence
    grpo           fixed tau (paper: 0.6, 1.0, 1.2)
    ead            annealed tau within a sequence, decay adapted to response length (appendix D.2)
    tampo          sequence-level tau from a meta-policy over {0.6, ..., 1.5} (appendix D.3)

The sampler's policies do the sampling; a method only picks the policy spec each step, so
rollouts in training and requests in serving run the same code.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

_METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def method_names() -> list[str]:
    return sorted(_METHODS)


def build_method_class(name: str) -> type[Method]:
    """The method class registered under ``name`` (ValueError listing the valid names)."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(method_names())}")
    return _METHODS[name]


def build_method(cfg, total_steps: int) -> Method:
    """The method named by ``cfg.method`` (a MethodConfig); unknown names list the valid ones."""
    if cfg.method not in _METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; valid: {', '.join(method_names())}")
    return _METHODS[cfg.method](cfg, total_steps)


class Method:
    name: ClassVar[str]
    trains_head: ClassVar[bool] = False
    """Whether step B (the temperature head's update) runs."""
    needs_tau_likelihoods: ClassVar[bool] = False
    """Whether ``observe`` needs each sequence's mean token log-likelihood at the TAMPO temperatures."""

    def __init__(self, cfg, total_steps: int):
        self.cfg, self.total_steps = cfg, total_steps

    def rollout_policy(self, step: int) -> str:
        """The sampler policy spec for the rollouts of training step ``step`` (0-based)."""
        raise NotImplementedError

    def prepare(self, engine) -> None:
        """Hook before a rollout (TAMPO hands its meta-policy to the engine's policy object)."""

    def observe(self, step: int, *, adv: Tensor, lengths: Tensor, tau_loglik: Tensor | None = None) -> dict[str, Any]:
        """Hook after the rewards, with the whole batch's advantages [N] and completion lengths [N]
        (all processes). Returns metrics to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@register("introllm")
class IntroLLM(Method):
    trains_head = True

    def rollout_policy(self, step):
        return "learned"


@register("always-update")
class AlwaysUpdate(IntroLLM):
    def rollout_policy(self, step):
        return "always-update"


@register("prompt-level")
class PromptLevel(IntroLLM):
    def rollout_policy(self, step):
        return "prompt-level"


@register("grpo")
class FixedGRPO(Method):
    def rollout_policy(self, step):
        return f"fixed:{self.cfg.fixed_tau:g}"


@register("ead")
class EAD(Method):
    """tau_t = max(tau_min, tau_start gamma_n^t), tau_start for the first tokens, with
    gamma_n = exp(-(c0 / L_avg) n / N): the decay sharpens over training and scales with the moving
    average response length L_avg (EMA 0.9 of the batch mean). The paper's truncated importance
    sampling is not needed here: the trainer re-scores with the tau each token was sampled at."""

    def __init__(self, cfg, total_steps):
        super().__init__(cfg, total_steps)
        self.avg_len: float | None = None

    def gamma(self, step: int) -> float:
        from introllm.sampler.policies import ead_gamma

        return 1.0 if self.avg_len is None else ead_gamma(self.cfg.ead_c0, self.avg_len, step, self.total_steps)

    def rollout_policy(self, step):
        c = self.cfg
        return f"ead:tau_start={c.ead_tau_start!r},tau_min={c.ead_tau_min!r},gamma={self.gamma(step)!r},warmup={c.ead_warmup_tokens}"

    def observe(self, step, *, adv, lengths, tau_loglik=None):
        mean_len = float(lengths.float().mean())
        self.avg_len = mean_len if self.avg_len is None else 0.9 * self.avg_len + 0.1 * mean_len
        return {"ead_gamma": self.gamma(step + 1), "ead_avg_len": self.avg_len}

    def state_dict(self):
        return {"avg_len": self.avg_len}

    def load_state_dict(self, state):
        self.avg_len = state.get("avg_len")


@register("tampo")
class TAMPO(Method):
    """Meta-policy over TAMPO_TEMPERATURES (appendix D.3).

    Each sequence y with group advantage A gives temperature-specific advantages
    TSA_j = A * P(y | tau_j) / sum_k P(y | tau_k). P(y | tau) is length-normalised, the geometric
    mean of the token probabilities exp(mean_t log p(y_t | tau)), as TAMPO's own paper defines the
    trajectory likelihood: the raw product over hundreds of tokens would make the weights one-hot
    on long sequences. The step's score of tau_j is sum_i TSA_ij / sum_i |A_i| (in [-1, 1]); the
    target distribution is softmax(sharpness * score) and the meta-policy moves towards it by
    EMA: p <- ema p + (1 - ema) target (the paper gives EMA 0.9 but not the target's form; the
    softmax and its sharpness are ours). The first ``tampo_warmup`` of the steps sample at
    tau = 1.0 while the meta-policy already learns from them; afterwards each sequence draws its
    tau from the top-p (0.9) nucleus of the meta-policy.
    """

    needs_tau_likelihoods = True

    def __init__(self, cfg, total_steps):
        super().__init__(cfg, total_steps)
        from introllm.sampler.policies import TAMPO_TEMPERATURES

        self.temperatures = torch.tensor(TAMPO_TEMPERATURES)
        self.probs = torch.full((len(TAMPO_TEMPERATURES),), 1.0 / len(TAMPO_TEMPERATURES))

    def warming_up(self, step: int) -> bool:
        return step < math.ceil(self.cfg.tampo_warmup * self.total_steps)

    def rollout_policy(self, step):
        return "fixed:1" if self.warming_up(step) else f"tampo:top_p={self.cfg.tampo_top_p!r}"

    def prepare(self, engine):
        engine.policy(f"tampo:top_p={self.cfg.tampo_top_p!r}").set_probs(self.probs)

    def observe(self, step, *, adv, lengths, tau_loglik=None):
        if tau_loglik is None:
            raise ValueError("tampo needs the per-temperature likelihoods of the rollouts")
        self.probs = tampo_update(
            self.probs, adv, tau_loglik, ema=self.cfg.tampo_ema, sharpness=self.cfg.tampo_sharpness
        )
        mean_tau = float((self.probs * self.temperatures).sum())
        return {"tampo_probs": [round(float(p), 4) for p in self.probs], "tampo_mean_tau": mean_tau}

    def state_dict(self):
        return {"probs": [float(p) for p in self.probs]}

    def load_state_dict(self, state):
        self.probs = torch.tensor(state["probs"], dtype=torch.float32)


def tampo_update(probs: Tensor, adv: Tensor, tau_loglik: Tensor, *, ema: float, sharpness: float) -> Tensor:
    """One meta-policy step (see TAMPO). probs [K]; adv [N]; tau_loglik [N, K] mean token
    log-likelihood of each sequence at each candidate temperature. A batch with no signal
    (all advantages 0) leaves probs unchanged."""
    weights = torch.softmax(tau_loglik.double(), dim=-1)  # P(y|tau_j) / sum_k P(y|tau_k)
    tsa = adv.double()[:, None] * weights  # [N, K]
    total = adv.double().abs().sum()
    if total == 0:
        return probs.clone()
    score = tsa.sum(0) / total
    target = torch.softmax(sharpness * score, dim=0)
    new = ema * probs.double() + (1 - ema) * target
    return (new / new.sum()).float()
