"""The temperature head (paper §4.2, appendix B.1) and its mixed discrete-continuous distribution.

    u_t = W2 · ReLU(W1 h_t + b1) + b2 = [u_c, u_alpha, u_beta]            (eq. 8)
    c_t ~ Bernoulli(sigmoid(u_c))                                           stage 1: update or keep
    z_t ~ Beta(softplus(u_alpha) + 1e-6, softplus(u_beta) + 1e-6)           (eq. 9), only if c_t = 1
    tau_t = tau_min + z_t (tau_max - tau_min)   if c_t = 1,   tau_{t-1}  otherwise  (tau_0 = 1.0)
    log pi_phi(c_t, z_t | h_t) = log P(c_t) + c_t log p(z_t | alpha, beta)          (eq. 10)

Numerics. All distribution math runs in float32 whatever the head's or model's dtype (bf16 u's are
upcast first). z is clamped to [Z_EPS, 1 - Z_EPS] by ``clamp_z`` both when it is sampled (the
recorded z is the clamped one) and when it is scored, so the trainer scores exactly the action the
sampler took, and log p(z) stays finite at the boundary even for concentrations from 1e-6 to 1e3.
Where c_t = 0 the recorded z is unused; it is replaced by 0.5 before scoring so that neither the
value nor its gradient can be NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONCENTRATION_EPS = 1e-6  # the paper's epsilon in eq. 9
Z_EPS = 1e-6  # z is kept in [Z_EPS, 1 - Z_EPS]; 1 - 1e-6 is exact enough in float32 (spacing 6e-8)
SOFTPLUS_INV_1 = math.log(math.e - 1.0)  # softplus(0.5413) = 1, so Beta(1, 1) at initialisation


@dataclass(frozen=True)
class HeadConfig:
    """Shape and temperature range of a temperature head; saved beside its weights."""

    hidden_size: int
    """Width d of the model's final hidden state h_t; the bottleneck is d // 2 (paper B.1)."""
    tau_min: float = 0.6
    """Lowest temperature the head can choose (paper: 0.6)."""
    tau_max: float = 1.5
    """Highest temperature the head can choose (paper: 1.5)."""
    tau_init: float = 1.0
    """tau_0, the temperature a sequence starts from before its first update (paper: 1.0)."""

    def __post_init__(self) -> None:
        if self.hidden_size < 2:
            raise ValueError(f"hidden_size must be >= 2, got {self.hidden_size}")
        if not 0.0 < self.tau_min < self.tau_max:
            raise ValueError(f"need 0 < tau_min < tau_max, got tau_min={self.tau_min}, tau_max={self.tau_max}")
        if not self.tau_min <= self.tau_init <= self.tau_max:
            raise ValueError(
                f"tau_init={self.tau_init} must lie in [tau_min, tau_max] = [{self.tau_min}, {self.tau_max}]"
            )

    @property
    def bottleneck(self) -> int:
        return self.hidden_size // 2


class TemperatureHead(nn.Module):
    """Linear(d, d/2) -> ReLU -> Linear(d/2, 3): h_t [..., d] -> u_t = [u_c, u_alpha, u_beta] [..., 3]."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.hidden_size, config.bottleneck)
        self.fc2 = nn.Linear(config.bottleneck, 3)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Weights N(0, 0.02); b1 = 0; b2 = [0, softplus^-1(1), softplus^-1(1)] (paper B.1), so that
        P(change) = 0.5 and z ~ Beta(1, 1) = Uniform(0, 1) for any input at the start."""
        with torch.no_grad():
            for layer in (self.fc1, self.fc2):
                layer.weight.normal_(0.0, 0.02, generator=generator)
                layer.bias.zero_()
            self.fc2.bias.copy_(torch.tensor([0.0, SOFTPLUS_INV_1, SOFTPLUS_INV_1]))

    def forward(self, h: Tensor) -> Tensor:
        """h: [..., d] in any float dtype -> u: float32 [..., 3]."""
        h = h.to(self.fc1.weight.dtype)
        return self.fc2(F.relu(self.fc1(h))).float()


def concentrations(u: Tensor) -> tuple[Tensor, Tensor]:
    """Beta parameters (alpha, beta) from head outputs u [..., 3] (eq. 9)."""
    u = u.float()
    return F.softplus(u[..., 1]) + CONCENTRATION_EPS, F.softplus(u[..., 2]) + CONCENTRATION_EPS


def update_prob(u: Tensor) -> Tensor:
    """P(c_t = 1) = sigmoid(u_c)."""
    return torch.sigmoid(u[..., 0].float())


def clamp_z(z: Tensor) -> Tensor:
    """Keep z inside (0, 1) so that log p(z) is finite; applied identically at sampling and scoring."""
    return z.clamp(Z_EPS, 1.0 - Z_EPS)


def z_to_tau(z: Tensor, tau_min: float, tau_max: float) -> Tensor:
    """tau = tau_min + z (tau_max - tau_min)."""
    return tau_min + z * (tau_max - tau_min)


def beta_log_prob(z: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """log Beta(z; alpha, beta) = (a-1) log z + (b-1) log(1-z) - [lgamma(a) + lgamma(b) - lgamma(a+b)].

    Evaluated in float64 and returned as float32: for large concentrations the three lgamma terms
    are in the thousands and cancel, which float32 cannot do to 1e-5. The tensors are [N, T]
    scalars per token, so the cost is nil.
    """
    z, a, b = clamp_z(z.float()).double(), alpha.double(), beta.double()
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return ((a - 1.0) * torch.log(z) + (b - 1.0) * torch.log1p(-z) - log_norm).float()


def gate_log_prob(u: Tensor, updated: Tensor) -> Tensor:
    """log P(c_t) for c_t in {0, 1}: log sigmoid(u_c) if updated, log sigmoid(-u_c) otherwise."""
    u_c = u[..., 0].float()
    return torch.where(updated, F.logsigmoid(u_c), F.logsigmoid(-u_c))


def action_log_prob(u: Tensor, updated: Tensor, z: Tensor, *, with_gate: bool = True) -> Tensor:
    """log pi_phi(c_t, z_t | h_t) = [log P(c_t)] + c_t log p(z_t) (eq. 10), float32 [...].

    u: [..., 3] head outputs; updated: bool [...] (c_t); z: [...] recorded z (ignored where not updated).
    ``with_gate=False`` drops the Bernoulli term, for the ablations that have no gate (always-update,
    prompt-level): there ``updated`` only marks the steps where a z was drawn.
    """
    alpha, beta = concentrations(u)
    z_safe = torch.where(updated, z.float(), torch.full_like(alpha, 0.5))
    logp = torch.where(updated, beta_log_prob(z_safe, alpha, beta), torch.zeros_like(alpha))
    if with_gate:
        logp = logp + gate_log_prob(u, updated)
    return logp
