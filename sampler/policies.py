"""Temperature policies: one interface, chosen by name.

A policy decides, at each decoding step and for each sequence, the temperature tau_t and returns the
action record needed to score that decision later. The same objects serve as training baselines and
as per-request overrides in the server.

=================  ==========================================================================
name               what it does
=================  ==========================================================================
``learned``        the paper's policy: Bernoulli gate, then Beta value (§4.2)
``always-update``  ablation (§5.3): a new Beta value at every token, no gate
``prompt-level``   ablation (§5.3): one Beta value from the prompt's last hidden state, kept
``fixed:T``        constant tau = T; ``fixed:0`` (alias ``greedy``) is argmax decoding
``ead``            EAD as the paper describes it (D.2): tau_t = max(tau_min, tau_start·gamma^t),
                   tau_start for the first 10 tokens
``ead-exp``        EAD as its authors' code has it: tau_t = max(1 + tau_max - e^(t/d), tau_min)
``tampo``          TAMPO (D.3): one tau per sequence from a distribution over {0.6, ..., 1.5},
                   drawn from its top-p nucleus; the meta-update lives in training
=================  ==========================================================================

Specs take arguments after a colon: ``fixed:0.7``, ``ead:gamma=0.99,tau_min=0.1``.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from . import head as H
from .rng import SLOT_CHOICE, SLOT_GATE, beta_sample, beta_sample_one


@dataclass
class TempAction:
    """The temperature decision for a batch of B sequences at one step."""

    tau: Tensor  # float32 [B]; 0 means greedy (argmax)
    updated: Tensor  # bool [B]; c_t, or "a new temperature was chosen here" for policies without a gate
    z: Tensor  # float32 [B]; the (clamped) Beta draw where updated, 0 elsewhere
    logp: Tensor  # float32 [B]; log pi_phi(c_t, z_t | h_t); 0 for policies without parameters


class TemperaturePolicy:
    """Interface. ``act`` is called once per decoding step on the rows that use this policy.

    h: [B, d] final hidden states; step: int64 [B] index of the token being generated (0 = first);
    tau_prev: float32 [B] the previous step's tau (``initial_tau`` at step 0); rand: float32
    [B, NUM_UNIFORMS] this step's uniforms (see rng); score: also compute ``logp``, the log-prob of
    the decision (what the trainer compares its own scoring with); False leaves it 0 and the
    decisions unchanged (a server needs no log-probs of the head's actions).
    """

    name: ClassVar[str]
    uses_head: ClassVar[bool] = False
    """True when tau depends on the temperature head, whose decisions the trainer scores."""
    initial_tau: float = 1.0

    def act(self, h: Tensor, step: Tensor, tau_prev: Tensor, rand: Tensor, score: bool = True) -> TempAction:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The string that rebuilds this policy with ``build_policy``."""
        return self.name


_REGISTRY: dict[str, Callable[..., TemperaturePolicy]] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def policy_names() -> list[str]:
    return sorted([*_REGISTRY, "greedy"])


def _parse_args(arg: str) -> tuple[list[float], dict[str, float]]:
    positional, named = [], {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, value = part.partition("=")
        try:
            if eq:
                named[key.strip().replace("-", "_")] = float(value)
            else:
                positional.append(float(part))
        except ValueError:
            raise ValueError(f"policy argument {part!r} is not a number") from None
    return positional, named


def build_policy(spec: str, head: H.TemperatureHead | None = None) -> TemperaturePolicy:
    """Build a policy from its spec, e.g. ``"learned"``, ``"fixed:0.7"``, ``"ead:gamma=0.99"``.

    Raises ValueError naming the valid policies when the name is unknown, and when a policy that
    needs the temperature head is asked for without one.
    """
    name, _, arg = spec.strip().partition(":")
    if name == "greedy":
        name, arg = "fixed", "0"
    if name not in _REGISTRY:
        raise ValueError(f"unknown temperature policy {name!r}; valid policies: {', '.join(policy_names())}")
    cls = _REGISTRY[name]
    positional, named = _parse_args(arg)
    if getattr(cls, "uses_head", False):
        if head is None:
            raise ValueError(f"policy {name!r} needs a temperature head, and this model has none")
        if (positional or named) and not getattr(cls, "takes_args", False):
            raise ValueError(f"policy {name!r} takes no arguments (its bounds come from the head)")
        try:
            return cls(head, *positional, **named)
        except TypeError as e:
            raise ValueError(f"bad arguments for policy {name!r}: {e}") from None
    try:
        return cls(*positional, **named)
    except TypeError as e:
        raise ValueError(f"bad arguments for policy {name!r}: {e}") from None


def act_mixed(
    policies: list[TemperaturePolicy],
    which: Tensor,
    h: Tensor,
    step: Tensor,
    tau_prev: Tensor,
    rand: Tensor,
    score: bool = True,
) -> TempAction:
    """One step for a batch whose rows use different policies: row i acts under
    ``policies[which[i]]`` (which: int64 [B]). Each policy runs once, on its own rows. The result's
    tau, z and logp are float32; ``score`` as ``TemperaturePolicy.act``'s."""
    kinds = which.unique() if len(policies) > 1 else which[:1]  # one policy: every row's (no unique)
    if kinds.numel() == 1:
        a = policies[int(kinds[0])].act(h, step, tau_prev, rand, score)
        return TempAction(tau=a.tau.float(), updated=a.updated, z=a.z.float(), logp=a.logp.float())
    rows = which.shape[0]
    out = TempAction(
        tau=torch.zeros(rows, device=rand.device),
        updated=torch.zeros(rows, dtype=torch.bool, device=rand.device),
        z=torch.zeros(rows, device=rand.device),
        logp=torch.zeros(rows, device=rand.device),
    )
    for kind in kinds.tolist():
        idx = (which == kind).nonzero().squeeze(-1)
        a = policies[kind].act(h[idx], step[idx], tau_prev[idx], rand[idx], score)
        out.tau[idx], out.updated[idx], out.z[idx], out.logp[idx] = (
            a.tau.float(),
            a.updated,
            a.z.float(),
            a.logp.float(),
        )
    return out


class PolicyCache:
    """Policy objects by spec, shared by the requests that name the same spec. The ``size`` most
    recently used specs are kept (a server sees arbitrary fixed temperatures)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: collections.OrderedDict[str, TemperaturePolicy] = collections.OrderedDict()

    def get(self, spec: str, head: H.TemperatureHead | None) -> TemperaturePolicy:
        """The policy for ``spec`` (built with ``head`` the first time); ValueError as build_policy."""
        if spec in self._items:
            self._items.move_to_end(spec)
        else:
            self._items[spec] = build_policy(spec, head)
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return self._items[spec]


# --------------------------------------------------------------------------- head-driven policies


class _HeadPolicy(TemperaturePolicy):
    uses_head = True
    gated: ClassVar[bool]
    """Whether log pi includes the Bernoulli term log P(c_t)."""

    def __init__(self, head: H.TemperatureHead):
        self.head = head
        self.tau_min, self.tau_max = head.config.tau_min, head.config.tau_max
        self.initial_tau = head.config.tau_init

    def draws_z(self, u: Tensor, step: Tensor, rand: Tensor) -> Tensor:
        """bool [B]: where this step draws a new z (c_t)."""
        raise NotImplementedError

    def act(self, h, step, tau_prev, rand, score=True):
        u = self.head(h)  # [B, 3] float32
        if h.shape[0] == 1 and not score and h.device.type == "cpu":
            return self._act_one(u, step, tau_prev, rand)
        updated = self.draws_z(u, step, rand)
        if h.device.type == "cpu" and not bool(updated.any()):
            # no row draws a z this step (at batch 1, each step the gate keeps tau): the Beta draw
            # would be discarded, so it is skipped (on CPU, where asking costs no device sync);
            # the action is the full path's: tau, z and the gate exactly (tests/test_policies.py)
            z = torch.zeros_like(tau_prev, dtype=torch.float32)
            logp = self.log_prob(u, updated, z) if score else torch.zeros_like(z)
            return TempAction(tau=tau_prev.clone(), updated=updated, z=z, logp=logp)
        alpha, beta = H.concentrations(u)
        z = H.clamp_z(beta_sample(alpha, beta, rand))
        z = torch.where(updated, z, torch.zeros_like(z))
        tau = torch.where(updated, H.z_to_tau(z, self.tau_min, self.tau_max), tau_prev)
        logp = self.log_prob(u, updated, z) if score else torch.zeros_like(z)
        return TempAction(tau=tau, updated=updated, z=z, logp=logp)

    def _act_one(self, u: Tensor, step: Tensor, tau_prev: Tensor, rand: Tensor) -> TempAction:
        """``act`` for a batch of one on CPU, unscored (a server's single stream): the same gate,
        Beta draw and tau from the same uniforms, in Python floats (``rng.beta_sample_one``)
        instead of tensor operations on one element: the policy's share of a llama.cpp step was
        0.60-0.63 ms before and 0.31-0.33 ms after (two runs of ``benchmarks/llamacpp_step.py``,
        2-vCPU AVX2 EPYC).
        Equal to the tensor path to float32 rounding (tests/test_policies.py)."""
        updated = self.draws_z(u, step, rand)
        if not bool(updated[0]):
            return TempAction(tau=tau_prev.clone(), updated=updated, z=torch.zeros(1), logp=torch.zeros(1))
        _, u_alpha, u_beta = u[0].tolist()
        alpha = _softplus(u_alpha) + H.CONCENTRATION_EPS
        beta = _softplus(u_beta) + H.CONCENTRATION_EPS
        z = min(max(beta_sample_one(alpha, beta, rand[0].tolist()), H.Z_EPS), 1.0 - H.Z_EPS)
        tau = torch.tensor([H.z_to_tau(z, self.tau_min, self.tau_max)])
        return TempAction(tau=tau, updated=updated, z=torch.tensor([z]), logp=torch.zeros(1))

    def log_prob(self, u: Tensor, updated: Tensor, z: Tensor) -> Tensor:
        """Score recorded actions under the head outputs u [..., 3] (what the trainer calls)."""
        return H.action_log_prob(u, updated, z, with_gate=self.gated)


def _softplus(x: float) -> float:
    """log(1 + e^x) in Python floats, as ``F.softplus`` (threshold 20: x itself above it)."""
    return x if x > 20.0 else math.log1p(math.exp(x))


@register("learned")
class LearnedPolicy(_HeadPolicy):
    gated = True

    def draws_z(self, u, step, rand):
        return rand[:, SLOT_GATE] < H.update_prob(u)


TAU_FLOOR = 0.01
"""The lowest tau a shifted policy samples at (a shift must not reach 0, which means greedy)."""


@register("shifted")
class ShiftedPolicy(LearnedPolicy):
    """The learned policy with every temperature it draws moved by ``delta``:
    tau = max(TAU_FLOOR, tau_min + z (tau_max - tau_min) + delta) where the gate updates, the
    previous (already shifted) tau where it keeps. Same gate, same Beta draws, same random numbers
    as ``learned``: only the level moves, not the per-token variation.

    The mean-matched row of Study 3 (``introllm eval --policy mean-matched:T``): delta = T minus
    the learned policy's token-mean tau on the same benchmark, so that per-token variation is
    compared with a fixed tau *at the same mean*. Evaluation only: the trainer never scores it."""

    takes_args = True

    def __init__(self, head: H.TemperatureHead, delta: float = 0.0):
        super().__init__(head)
        if not math.isfinite(delta):
            raise ValueError(f"shifted needs a finite delta, got {delta}")
        self.delta = float(delta)
        self.initial_tau = max(TAU_FLOOR, head.config.tau_init + self.delta)

    def act(self, h, step, tau_prev, rand, score=True):
        a = super().act(h, step, tau_prev, rand, score)
        drawn = (H.z_to_tau(a.z, self.tau_min, self.tau_max) + self.delta).clamp_min(TAU_FLOOR)
        a.tau = torch.where(a.updated, drawn, tau_prev)
        return a

    @property
    def spec(self):
        return f"shifted:delta={self.delta!r}"


@register("always-update")
class AlwaysUpdatePolicy(_HeadPolicy):
    gated = False

    def draws_z(self, u, step, rand):
        return torch.ones_like(step, dtype=torch.bool)


@register("prompt-level")
class PromptLevelPolicy(_HeadPolicy):
    """One tau per sequence, drawn from the head at the first generated token, whose hidden state
    is the prompt's last one; kept to the end."""

    gated = False

    def draws_z(self, u, step, rand):
        return step == 0


# --------------------------------------------------------------------------- parameter-free policies


def _no_update(tau: Tensor) -> TempAction:
    zeros = torch.zeros_like(tau)
    return TempAction(tau=tau, updated=torch.zeros_like(tau, dtype=torch.bool), z=zeros, logp=zeros)


@register("fixed")
class FixedPolicy(TemperaturePolicy):
    """A constant temperature; 0 means greedy decoding."""

    def __init__(self, tau: float = 1.0):
        if not (math.isfinite(tau) and tau >= 0):
            raise ValueError(f"fixed temperature must be a finite number >= 0, got {tau}")
        self.tau = float(tau)
        self.initial_tau = self.tau

    def act(self, h, step, tau_prev, rand, score=True):
        return _no_update(torch.full(step.shape, self.tau, device=step.device))

    @property
    def spec(self):
        return f"fixed:{self.tau:g}"


class _SchedulePolicy(TemperaturePolicy):
    """tau as a function of the token index only."""

    def schedule(self, step: Tensor) -> Tensor:
        raise NotImplementedError

    def act(self, h, step, tau_prev, rand, score=True):
        tau = self.schedule(step).float()
        action = _no_update(tau)
        action.updated = (tau != tau_prev) & (step > 0)
        return action


EAD_REFERENCE_LENGTH = 512
"""The answer length (tokens) EAD's default schedule is tuned for: c0 = 25 over 512-token answers."""


@register("ead")
class EADPolicy(_SchedulePolicy):
    """Exploratory annealed decoding as the paper describes it (appendix D.2):
    tau_t = max(tau_min, tau_start · gamma^t), with tau_t = tau_start for the first ``warmup`` tokens.

    The paper adapts gamma during training, gamma_n = exp(-(c0 / L_avg) · n / N_total); see
    ``ead_gamma``. The default gamma here is that formula at the end of training for c0 = 25 and
    a 512-token average response (``EAD_REFERENCE_LENGTH``).

    ``length``: the schedule scaled to answers of that many tokens. The whole schedule (warm-up and
    decay) is stretched along the token axis by length / 512, tau_t = schedule(t · 512 / length):
    on 20-token answers the temperature falls over 20 tokens as the default falls over 512,
    instead of sampling everything at tau_start (0 = unscaled, the default).

    >>> [round(v, 3) for v in EADPolicy().schedule(torch.tensor([0, 9, 10, 32])).tolist()]
    [1.2, 1.2, 0.736, 0.252]
    >>> [round(v, 3) for v in EADPolicy(length=64).schedule(torch.tensor([0, 1, 2, 4])).tolist()]
    [1.2, 1.2, 0.549, 0.252]
    """

    def __init__(
        self,
        tau_start: float = 1.2,
        tau_min: float = 0.1,
        gamma: float = math.exp(-25 / EAD_REFERENCE_LENGTH),
        warmup: float = 10,
        length: float = 0,
    ):
        if not 0 < tau_min <= tau_start:
            raise ValueError(f"ead needs 0 < tau_min <= tau_start, got tau_min={tau_min}, tau_start={tau_start}")
        if not 0 < gamma <= 1:
            raise ValueError(f"ead needs 0 < gamma <= 1, got {gamma}")
        if length < 0:
            raise ValueError(f"ead needs length >= 0 (0: unscaled), got {length}")
        self.tau_start, self.tau_min, self.gamma, self.warmup = (
            float(tau_start),
            float(tau_min),
            float(gamma),
            int(warmup),
        )
        self.length = float(length)
        self.initial_tau = self.tau_start

    def schedule(self, step):
        t = step.double() * (EAD_REFERENCE_LENGTH / self.length if self.length else 1.0)
        decayed = self.tau_start * torch.pow(self.gamma, t)
        return torch.where(t < self.warmup, self.tau_start, decayed.clamp_min(self.tau_min))

    @property
    def spec(self):
        scaled = f",length={self.length:g}" if self.length else ""
        return f"ead:tau_start={self.tau_start:g},tau_min={self.tau_min:g},gamma={self.gamma!r},warmup={self.warmup}{scaled}"


def ead_gamma(c0: float, avg_len: float, step: int, total_steps: int) -> float:
    """The paper's EAD decay for training step n of N: gamma_n = exp(-(c0 / L_avg) · n / N)."""
    return math.exp(-(c0 / max(avg_len, 1.0)) * step / max(total_steps, 1))


@register("ead-exp")
class EADExpPolicy(_SchedulePolicy):
    """EAD as the EAD authors' released code computes it: tau_t = max(1 + tau_max - e^(t/d), tau_min).

    Starts at tau_max and falls ever faster; d (the horizon) grows with the training step there.
    """

    def __init__(self, tau_max: float = 1.2, tau_min: float = 0.1, d: float = 200.0):
        if not 0 < tau_min <= tau_max or d <= 0:
            raise ValueError(f"ead-exp needs 0 < tau_min <= tau_max and d > 0, got {tau_min}, {tau_max}, {d}")
        self.tau_max, self.tau_min, self.d = float(tau_max), float(tau_min), float(d)
        self.initial_tau = self.tau_max

    def schedule(self, step):
        return (1.0 + self.tau_max - torch.exp(step.double() / self.d)).clamp_min(self.tau_min)

    @property
    def spec(self):
        return f"ead-exp:tau_max={self.tau_max:g},tau_min={self.tau_min:g},d={self.d:g}"


TAMPO_TEMPERATURES = tuple(round(0.6 + 0.1 * i, 1) for i in range(10))  # {0.6, 0.7, ..., 1.5}


@register("tampo")
class TampoPolicy(TemperaturePolicy):
    """TAMPO's sampling side (appendix D.3): at the first token, tau is drawn from the meta-policy's
    distribution over ``TAMPO_TEMPERATURES`` restricted to its top-p nucleus (p = 0.9), then kept.

    The meta-policy ``probs`` is updated by training (temperature-specific advantages, EMA); served
    on its own it is uniform. The paper selects one tau per batch; we draw one per sequence, which
    gives each sequence an independent draw from the same distribution.
    """

    def __init__(self, top_p: float = 0.9, probs: list[float] | Tensor | None = None):
        if not 0 < top_p <= 1:
            raise ValueError(f"tampo top_p must be in (0, 1], got {top_p}")
        self.top_p = float(top_p)
        self.temperatures = torch.tensor(TAMPO_TEMPERATURES, dtype=torch.float32)
        self.set_probs(
            torch.full((len(TAMPO_TEMPERATURES),), 1.0 / len(TAMPO_TEMPERATURES)) if probs is None else probs
        )
        self.initial_tau = 1.0

    def set_probs(self, probs) -> None:
        probs = torch.as_tensor(probs, dtype=torch.float32).flatten()
        if probs.shape != self.temperatures.shape or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(f"tampo probs must be {len(self.temperatures)} non-negative numbers with a positive sum")
        self.probs = probs / probs.sum()

    def nucleus(self) -> Tensor:
        """The meta-distribution restricted to its smallest top-p set and renormalised."""
        order = torch.argsort(self.probs, descending=True, stable=True)
        sorted_p = self.probs[order]
        keep_sorted = (torch.cumsum(sorted_p, 0) - sorted_p) < self.top_p  # mass before this one < p
        keep = torch.zeros_like(keep_sorted).scatter(0, order, keep_sorted)
        p = torch.where(keep, self.probs, 0.0)
        return p / p.sum()

    def act(self, h, step, tau_prev, rand, score=True):
        p = self.nucleus().to(rand.device)
        cdf = torch.cumsum(p, 0)
        idx = torch.searchsorted(cdf, (rand[:, SLOT_CHOICE] * cdf[-1]).contiguous()).clamp_max(len(p) - 1)
        first = step == 0
        tau = torch.where(first, self.temperatures.to(rand.device)[idx], tau_prev)
        logp = torch.where(first, torch.log(p[idx]), 0.0)
        return TempAction(tau=tau, updated=first, z=torch.zeros_like(tau), logp=logp)
