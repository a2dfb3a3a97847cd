"""``introllm eval``, ``introllm compare`` and ``introllm plot``.

``eval``'s flags are generated from ``EvalConfig`` (how to sample and score), the fields of
``DataConfig`` that describe a benchmark, and ``EvalFiles`` (where records go); the experiment
runner validates its ``[eval]`` tables against the same three (``eval_configs``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introllm.training.config import ConfigError, DataConfig
from introllm.training.evaluate import EvalConfig
from introllm.training.meanshift import derived

from .common import add_config_flags, config_from_args, epilog_parser

log = logging.getLogger(__name__)

DATA_FIELDS = (
    "dataset",
    "prompt_field",
    "answer_field",
    "answer_boxed",
    "reward",
    "template",
    "instruction",
    "num_problems",
    "rg_args",
)
"""The DataConfig fields that are eval flags (the rest are training's)."""
DATA_DEFAULTS: dict[str, Any] = {"dataset": None, "num_problems": 200, "rg_args": {}}
"""Where eval's defaults differ from training's: a benchmark file, 200 problems of an rg: task, each
task's own generator arguments."""


@dataclass
class EvalFiles:
    """Where an evaluation's records go, and where a MeanShift tau comes from."""

    output: str = field(default="", metadata={"metavar": "FILE"})
    """records file (.jsonl) [eval/<dataset>-<policy>.jsonl]"""
    meanshift_from: str = field(default="", metadata={"metavar": "FILE"})
    """meanshift: records of a learned eval of the same checkpoint and benchmark [a first pass, kept as
    OUTPUT.learned.jsonl]"""


def eval_configs(values: dict[str, Any]) -> tuple[EvalConfig, DataConfig, EvalFiles]:
    """The three configs of one ``introllm eval`` from a flat table of its flags' names (an
    experiment's [eval] tables); unknown names are a ConfigError that lists the valid ones."""
    import dataclasses

    names = {c: {f.name for f in dataclasses.fields(c)} for c in (EvalConfig, EvalFiles)}
    valid = names[EvalConfig] | names[EvalFiles] | set(DATA_FIELDS)
    bad = sorted(set(values) - valid)
    if bad:
        raise ConfigError(f"unknown eval flag(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
    data = {**DATA_DEFAULTS, "eval_size": 0, **{k: v for k, v in values.items() if k in DATA_FIELDS}}
    if not data.get("dataset"):
        data["dataset"] = "rg:basic_arithmetic"  # the dataset comes from --heldout's run (checked in run_eval)
    return (
        EvalConfig(**{k: v for k, v in values.items() if k in names[EvalConfig]}),
        DataConfig(**data),
        EvalFiles(**{k: v for k, v in values.items() if k in names[EvalFiles]}),
    )


EVAL_EXAMPLES = """\
examples:
  introllm eval --dataset rg:basic_arithmetic --limit 32                   the embedded model, learned tau
  introllm eval --checkpoint runs/introllm/final --dataset math500.jsonl --k 8 --output results/intro.jsonl
  introllm eval --checkpoint runs/introllm/final --dataset math500.jsonl --policy fixed:0.6 --output results/t06.jsonl
  introllm eval --dataset rg:leg_counting --rg-args '{"max_animals": 3}' --limit 16     any reasoning-gym task
  introllm eval --head init --dataset rg:leg_counting,basic_arithmetic --k 4        the untrained head on a mix
  introllm eval --dataset olympiadbench.jsonl --answer-field final_answer            list answers are joined
  introllm eval --dataset minerva_math.jsonl --answer-field solution --answer-boxed  gold in the last \\boxed{}
  introllm compare results/*.summary.json

benchmark files: JSONL, one problem per line: {"problem": ..., "answer": ..., "level": ..., "subject": ..., "id": ...}
(level, subject, id optional; field names are flags). Answers are checked with math-verify.
"""


def add_parsers(sub) -> None:
    ev = epilog_parser(
        sub,
        "eval",
        help="Avg@k / Pass@k of a checkpoint on a benchmark, with per-token traces",
        description="Sample k completions per problem, check each answer, report Avg@k and Pass@k "
        "overall and per level / subject; every sample (text, correctness, trace) goes to a JSONL file.",
        epilog=EVAL_EXAMPLES,
    )
    add_config_flags(ev, EvalConfig, defaults={"head": None})
    add_config_flags(ev, DataConfig, only=DATA_FIELDS, defaults=DATA_DEFAULTS)
    add_config_flags(ev, EvalFiles)
    ev.set_defaults(func=cmd_eval)

    cmp_ = sub.add_parser(
        "compare",
        help="Markdown table of evaluation results (the paper's Table 1 shape)",
        description="Benchmarks x methods with Avg@k and Pass@k in percent, the best of each column in bold.",
    )
    cmp_.add_argument(
        "results",
        nargs="+",
        metavar="RESULT",
        help="summary files (or the records files beside them) from introllm eval",
    )
    cmp_.add_argument("--output", metavar="FILE", help="also write the table to FILE")
    cmp_.set_defaults(func=cmd_compare)

    pl = sub.add_parser(
        "plot",
        help="the paper's figures for training runs and an evaluation, plus index.html",
        description="Figures 2-7 of the paper as PNG files and an index.html that shows them.",
    )
    pl.add_argument(
        "--run", action="append", default=[], metavar="DIR", help="training run directory; repeat to compare runs"
    )
    pl.add_argument(
        "--eval",
        metavar="FILE",
        help="records file from introllm eval for the token-level figures [the run's samples]; "
        "alone (no --run), the evaluation figures only",
    )
    pl.add_argument("--output", required=True, metavar="DIR", help="where the PNG files and index.html go")
    pl.set_defaults(func=cmd_plot)


def cmd_eval(args: argparse.Namespace) -> int:
    from introllm.sampler.models import quiet_transformers

    quiet_transformers()
    cfg = config_from_args(EvalConfig, args)
    files = config_from_args(EvalFiles, args)
    if bool(args.dataset) == bool(cfg.heldout):
        raise ValueError("give --dataset or --heldout RUN (one of them)")
    if cfg.heldout:
        from introllm.training.evaluate import heldout_problems

        data = heldout_problems(cfg.heldout)[0]
    else:
        data = config_from_args(DataConfig, args, eval_size=0)
        if data.dataset.startswith("rg:"):
            log.warning(
                "%s: reasoning-gym problems are drawn with the generator seed `introllm train` uses, so a model "
                "trained on %s is scored on problems it trained on; --heldout RUN evaluates on the problems that "
                "run held out instead",
                data.dataset,
                data.dataset,
            )
    return run_eval(cfg, data, files)


def run_eval(cfg: EvalConfig, data: DataConfig, files: EvalFiles) -> int:
    """Evaluate, with a progress bar on a terminal (a log line per batch otherwise), and print the summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from introllm.training.evaluate import benchmark_name, evaluate

    output = files.output or f"eval/{benchmark_name(data.dataset)}-{cfg.policy.replace(':', '')}.jsonl"
    tty = sys.stderr.isatty()
    with Progress(
        TextColumn("eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeRemainingColumn(),
        disable=not tty,
    ) as bar:
        task = bar.add_task("eval", total=None, acc="")

        def progress(done: int, total: int, acc: float) -> None:
            bar.update(task, completed=done, total=total, acc=f"accuracy {acc:.3f}")
            if not tty:  # a log file gets one line per batch instead of a bar
                log.info("eval: %d/%d problems, running accuracy %.3f", done, total, acc)

        if derived(cfg.policy):
            from dataclasses import replace

            from introllm.training.meanshift import resolve_for_eval

            spec, value = resolve_for_eval(cfg, data, output, source=files.meanshift_from, on_progress=progress)
            base = Path(cfg.checkpoint).name if cfg.checkpoint else "smollm2-135m-instruct"
            if cfg.policy == "meanshift":
                log.info("MeanShift: the learned policy's token-mean tau is %.4f; sampling at %s", value, spec)
                label = f"{base} (MeanShift {value:.4f})"
            else:
                log.info("mean-matched: the learned policy's temperatures moved by %+.4f (%s)", value, spec)
                label = f"{base} ({cfg.policy}, delta {value:+.4f})"
            cfg = replace(cfg, policy=spec, name=cfg.name or label)
        s = evaluate(cfg, data, output, on_progress=progress)

    def trace(v) -> str:
        return f"  tau {v['tau_mean']:.3f}  update rate {v['update_rate']:.3f}" if v.get("tau_mean") is not None else ""

    print(
        f"{s.name} on {benchmark_name(s.dataset)}: Avg@{s.k} {100 * s.avg_at_k:.2f} ± {100 * s.avg_at_k_ci95:.2f}  "
        f"Pass@{s.k} {100 * s.pass_at_k:.2f}  ({s.num_problems} problems x {s.n} samples, mean {s.mean_tokens:.0f} tokens)"
        f"{trace({'tau_mean': s.tau_mean, 'update_rate': s.update_rate})}"
    )
    for title, rows in (("level", s.by_level), ("subject", s.by_subject)):
        for key, v in rows.items():
            print(
                f"  {title} {key}: Avg@{s.k} {100 * v['avg_at_k']:.2f} ± {100 * v['avg_at_k_ci95']:.2f}  "
                f"Pass@{s.k} {100 * v['pass_at_k']:.2f}  ({v['num_problems']} problems){trace(v)}"
            )
    print(f"(± : half-width of a 95 % normal interval of Avg@{s.k} over problems)")
    print(f"records: {output}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from introllm.training.evaluate import compare_table, load_summary

    table = compare_table([load_summary(p) for p in args.results])
    print(table, end="")
    if args.output:
        Path(args.output).write_text(table)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from introllm.training.plots import make_plots

    if not args.run and not args.eval:
        raise ValueError("plot needs --run DIR (training figures) and/or --eval FILE (evaluation figures)")
    written = make_plots([Path(r) for r in args.run], Path(args.output), Path(args.eval) if args.eval else None)
    print(f"wrote {len(written)} files; open {Path(args.output) / 'index.html'}")
    return 0
