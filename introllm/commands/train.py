"""``introllm train``: flags generated from the config dataclasses (``introllm.training.config``), so
every field is a flag whose help is the field's docstring; flags default to None so that a
``--config`` file sits between the fields' defaults and the flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from introllm.training.config import SECTIONS, ConfigError, TrainConfig, read_config_file

from .common import add_config_flags, epilog_parser

EXAMPLES = """\
examples:
  introllm train                                      the embedded SmolLM2 on 1-digit arithmetic, IntroLLM
  introllm train --method grpo --fixed-tau 1.0 --output runs/grpo
  introllm train --freeze-model --output runs/head    head-only: the base frozen; then introllm serve --head runs/head/final
  introllm train --dataset rg:chain_sum,products --rg-args '{"products": {"max_digits": 1}}'   a mix of reasoning-gym tasks
  introllm train --dataset problems.jsonl --prompt-field problem --answer-field solution
  introllm train --config run.toml --steps 200        a config file, one value overridden
  introllm train --resume runs/introllm --steps 80    continue a run (exactly where it stopped)
  accelerate launch --num_processes 8 -m introllm train --model ckpt/qwen3 --batch-size 128

methods: introllm, grpo, ead, tampo, prompt-level, always-update
output:  DIR/metrics.jsonl (one line per step), DIR/samples.jsonl (completions with traces),
         DIR/checkpoint-N/ (resumable), DIR/final/ (load with: introllm serve --checkpoint DIR/final)
config file (TOML, or JSON with the same shape):
  [method]
  method = "introllm"
  [rollout]
  batch_size = 8
  [data]
  dataset = "rg:basic_arithmetic"
  rg_args = {min_terms = 2, max_terms = 3, min_digits = 1, max_digits = 1}
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = epilog_parser(
        sub,
        "train",
        help="RL fine-tuning (GRPO with a learned temperature head, or a baseline) producing checkpoints",
        description="Train model and temperature head with hierarchical GRPO and coordinate ascent "
        "(paper §4.3, Algorithm 1), or a baseline method. Defaults follow the paper's Table 5 where "
        "they fit a CPU run (batch size and length are smaller). Flags override the --config file.",
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML or JSON file with [data], [rollout], [method], [optim], [run] tables"
    )
    p.add_argument(
        "--resume", metavar="DIR", help="continue a run: its directory (latest checkpoint) or one checkpoint-N"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="one log line per step instead of a progress bar")
    for section, cls in SECTIONS.items():
        add_config_flags(p.add_argument_group(f"[{section}]"), cls, layered=True, dest_prefix=f"{section}.")
    p.set_defaults(func=run)
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """defaults < saved config of a resumed run < --config file < flags."""
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if args.resume:
        from introllm.training.state import latest_checkpoint, read_trainer_state

        ckpt = latest_checkpoint(Path(args.resume))
        if ckpt is None:
            raise ConfigError(f"resume: {args.resume} holds no checkpoint-N with a trainer_state/ directory")
        values = read_trainer_state(ckpt)["config"]
        values["run"]["output"] = str(Path(args.resume) if ckpt != Path(args.resume) else ckpt.parent)
    if args.config:
        for section, table in read_config_file(args.config).items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section [{section}] in {args.config}; valid: {', '.join(SECTIONS)}")
            if not isinstance(table, dict):
                raise ConfigError(f"[{section}] in {args.config} must be a table")
            values.setdefault(section, {}).update(table)
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            values.setdefault(section, {})[name] = value
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from introllm.sampler.models import quiet_transformers
    from introllm.training.trainer import train

    quiet_transformers()
    final = train(cfg, resume_from=args.resume, show_progress=False if args.no_progress else None)
    from accelerate import PartialState

    if PartialState().is_main_process:
        how = f"--head {final}" if cfg.method.freeze_model else f"--checkpoint {final}"
        print(f"final checkpoint: {final}\nserve it with: introllm serve {how}")
    return 0
