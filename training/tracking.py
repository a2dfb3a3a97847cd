"""Training runs logged to the field's experiment trackers (TensorBoard, Weights & Biases) through
accelerate's tracker API (``Accelerator(log_with=...)``, ``init_trackers``, ``log``), as TRL's
``report_to`` and verl's ``trainer.logger`` do: every figure that goes to ``metrics.jsonl``, each
step, plus the run's config as hyperparameters; held-out evaluation figures under ``eval/``.
Only the main process logs (accelerate's rule). The trackers are optional extras: asking for one
that is not installed is a one-line error naming the install command.
"""

from __future__ import annotations

import importlib.util
import json
import math
from typing import Any

from .config import REPORT_TO, ConfigError  # noqa: F401  (REPORT_TO: the values, re-exported)

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def tracker_names(report_to: str) -> list[str]:
    """The accelerate tracker names for ``report_to`` (none: [])."""
    if report_to == "none":
        return []
    return list(_PACKAGES) if report_to == "all" else [report_to]


def check_trackers(report_to: str) -> list[str]:
    """The trackers to use; raises ConfigError (one line, with the install command) for one whose
    package is missing."""
    names = tracker_names(report_to)
    for name in names:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ConfigError(f"report_to: {name} needs the {_PACKAGES[name]} package: pip install 'introllm[{name}]'")
    return names


def flat_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl row as tracker scalars: numbers as they are (``step`` left out: it is the
    x axis), ``eval_accuracy`` as ``eval/accuracy``, a table ``{"a": 1}`` under ``key/a``, a list
    of numbers under ``key/0``, ``key/1``...; strings and non-finite values are left out.

    >>> flat_metrics({"step": 3, "reward": 0.5, "policy": "learned", "eval_accuracy": 0.25, "tau_mean_by_level": {"1": 0.9}})
    {'reward': 0.5, 'eval/accuracy': 0.25, 'tau_mean_by_level/1': 0.9}
    """
    out: dict[str, float] = {}
    for key, value in row.items():
        if key == "step":
            continue
        name = "eval/" + key.removeprefix("eval_") if key.startswith("eval_") else key
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, (list, tuple)):
            items = ((str(i), v) for i, v in enumerate(value))
        else:
            items = [(None, value)]
        for sub, v in items:
            if isinstance(v, bool):
                v = float(v)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[name if sub is None else f"{name}/{sub}"] = float(v)
    return out


def flat_config(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """TrainConfig.to_dict() as hyperparameters: ``section.field`` -> a number, string or bool
    (tables and lists as JSON text, as TensorBoard's hparams take only scalars)."""
    out = {}
    for section, fields in config.items():
        for key, value in fields.items():
            out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out
