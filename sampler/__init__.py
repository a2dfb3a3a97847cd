"""Learned-temperature decoding (installed as ``introllm.sampler``): the temperature head, temperature
policies, the KV-cached engine, the backends and the checkpoint format. Training rollouts and the
server run this very code. Depends on no other package of ours."""

from .engine import DecodeBatch, Engine
from .head import HeadConfig, TemperatureHead, action_log_prob
from .interface import GenerationBatch, GenerationEngine
from .policies import TempAction, TemperaturePolicy, build_policy, policy_names
from .records import SamplingParams, Sequence, Trace
from .sampling import sample_tokens

__all__ = [
    "DecodeBatch",
    "Engine",
    "GenerationBatch",
    "GenerationEngine",
    "HeadConfig",
    "SamplingParams",
    "Sequence",
    "TempAction",
    "TemperatureHead",
    "TemperaturePolicy",
    "Trace",
    "action_log_prob",
    "build_policy",
    "policy_names",
    "sample_tokens",
]
