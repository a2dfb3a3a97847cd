"""``introllm eval``, ``introllm compare`` and ``introllm plot``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli import _json_table

log = logging.getLogger(__name__)

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
    from .config import DataConfig

    ev = sub.add_parser("eval", help="Avg@k / Pass@k of a checkpoint on a benchmark, with per-token traces",
                        description="Sample k completions per problem, check each answer, report Avg@k and Pass@k "
                        "overall and per level / subject; every sample (text, correctness, trace) goes to a JSONL file.",
                        epilog=EVAL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--checkpoint", metavar="DIR", default="", help="checkpoint directory (default: the embedded model)")
    from introllm.cli import add_head_arg

    add_head_arg(ev)
    ev.add_argument("--dataset", help="JSONL/JSON/CSV/Parquet benchmark file, or rg:<task>[,<task>...]")
    ev.add_argument("--heldout", metavar="RUN", default="", help="instead of --dataset: the problems training run RUN held out, "
                    "with its prompt and reward settings")
    ev.add_argument("--k", type=int, default=8, help="k of Avg@k and Pass@k [8]")
    ev.add_argument("--n", type=int, default=0, help="samples per problem, >= k; Pass@k is unbiased for n > k [k]")
    ev.add_argument("--policy", default="learned", help="temperature policy: learned, fixed:T, greedy, ead, tampo, or meanshift "
                    "(fixed at the learned policy's token-mean tau on this benchmark) [learned]")
    ev.add_argument("--meanshift-from", default="", metavar="FILE", help="meanshift: records of a learned eval of the same checkpoint "
                    "and benchmark [a first pass, kept as OUTPUT.learned.jsonl]")
    ev.add_argument("--max-new-tokens", type=int, default=512, help="most tokens per sample [512]")
    ev.add_argument("--limit", type=int, default=0, help="only the first N problems [all]")
    ev.add_argument("--batch-prompts", type=int, default=8, help="problems decoded together [8]")
    ev.add_argument("--seed", type=int, default=0, help="seed of the samples [0]")
    ev.add_argument("--name", default="", help="row name for introllm compare [checkpoint (policy)]")
    ev.add_argument("--output", default="", metavar="FILE", help="records file (.jsonl) [eval/<dataset>-<policy>.jsonl]")
    d = DataConfig()
    ev.add_argument("--prompt-field", default=d.prompt_field, help=f"field of the problem text ('problem' is tried too) [{d.prompt_field}]")
    ev.add_argument("--answer-field", default=d.answer_field, help=f"field of the reference answer; a list (OlympiadBench's "
                    f"final_answer) is joined with ', ' [{d.answer_field}]")
    ev.add_argument("--answer-boxed", action="store_true", help="take the reference answer from the last \\boxed{} of "
                    "--answer-field (Minerva Math: --answer-field solution --answer-boxed)")
    ev.add_argument("--reward", default=d.reward, help="auto, math, rg, exact, module:function or file.py:function [auto]")
    ev.add_argument("--template", default=d.template, choices=["chat", "plain"], help="prompt wrapping [chat]")
    ev.add_argument("--instruction", default=d.instruction, help="answer-format instruction appended to each problem")
    ev.add_argument("--num-problems", type=int, default=200, help="problems from each rg: generator [200]")
    ev.add_argument("--rg-args", type=_json_table, default={}, metavar="JSON",
                    help='reasoning-gym generator arguments, {"arg": value} or {"task": {"arg": value}} [{}: each task\'s own defaults]')
    ev.set_defaults(func=cmd_eval)

    cmp_ = sub.add_parser("compare", help="Markdown table of evaluation results (the paper's Table 1 shape)",
                          description="Benchmarks x methods with Avg@k and Pass@k in percent, the best of each column in bold.")
    cmp_.add_argument("results", nargs="+", metavar="RESULT", help="summary files (or the records files beside them) from introllm eval")
    cmp_.add_argument("--output", metavar="FILE", help="also write the table to FILE")
    cmp_.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plot", help="the paper's figures for training runs and an evaluation, plus index.html",
                        description="Figures 2-7 of the paper as PNG files and an index.html that shows them.")
    pl.add_argument("--run", action="append", default=[], metavar="DIR", help="training run directory; repeat to compare runs")
    pl.add_argument("--eval", metavar="FILE", help="records file from introllm eval for the token-level figures [the run's samples]; "
                    "alone (no --run), the evaluation figures only")
    pl.add_argument("--output", required=True, metavar="DIR", help="where the PNG files and index.html go")
    pl.set_defaults(func=cmd_plot)


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .config import DataConfig
    from .evaluate import EvalConfig, benchmark_name, evaluate

    from introllm.sampler.models import quiet_transformers

    quiet_transformers()
    if bool(args.dataset) == bool(args.heldout):
        raise ValueError("give --dataset or --heldout RUN (one of them)")
    if args.heldout:
        from .evaluate import heldout_problems

        data = heldout_problems(args.heldout)[0]
        args.dataset = data.dataset
    else:
        if args.dataset.startswith("rg:"):
            log.warning("%s: reasoning-gym problems are drawn with the generator seed `introllm train` uses, so a model "
                        "trained on %s is scored on problems it trained on; --heldout RUN evaluates on the problems that "
                        "run held out instead", args.dataset, args.dataset)
        data = DataConfig(dataset=args.dataset, prompt_field=args.prompt_field, answer_field=args.answer_field, reward=args.reward,
                          template=args.template, instruction=args.instruction, num_problems=args.num_problems, eval_size=0,
                          rg_args=args.rg_args, answer_boxed=args.answer_boxed)
    cfg = EvalConfig(checkpoint=args.checkpoint, head=args.head or "", heldout=args.heldout, k=args.k, n=args.n, policy=args.policy, max_new_tokens=args.max_new_tokens,
                     limit=args.limit, batch_prompts=args.batch_prompts, seed=args.seed, name=args.name)
    output = args.output or f"eval/{benchmark_name(args.dataset)}-{args.policy.replace(':', '')}.jsonl"
    tty = sys.stderr.isatty()
    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[acc]}"), TimeRemainingColumn(),
                  disable=not tty) as bar:
        task = bar.add_task("eval", total=None, acc="")

        def progress(done: int, total: int, acc: float) -> None:
            bar.update(task, completed=done, total=total, acc=f"accuracy {acc:.3f}")
            if not tty:  # a log file gets one line per batch instead of a bar
                log.info("eval: %d/%d problems, running accuracy %.3f", done, total, acc)

        if args.policy == "meanshift":
            from dataclasses import replace

            from .meanshift import resolve_for_eval

            spec, tau = resolve_for_eval(cfg, data, output, source=args.meanshift_from, on_progress=progress)
            log.info("MeanShift: the learned policy's token-mean tau is %.4f; sampling at %s", tau, spec)
            cfg = replace(cfg, policy=spec, name=cfg.name or f"{Path(cfg.checkpoint).name if cfg.checkpoint else 'smollm2-135m-instruct'} (MeanShift {tau:.4f})")
        s = evaluate(cfg, data, output, on_progress=progress)

    def trace(v) -> str:
        return f"  tau {v['tau_mean']:.3f}  update rate {v['update_rate']:.3f}" if v.get("tau_mean") is not None else ""

    print(f"{s.name} on {benchmark_name(s.dataset)}: Avg@{s.k} {100 * s.avg_at_k:.2f} ± {100 * s.avg_at_k_ci95:.2f}  "
          f"Pass@{s.k} {100 * s.pass_at_k:.2f}  ({s.num_problems} problems x {s.n} samples, mean {s.mean_tokens:.0f} tokens)"
          f"{trace({'tau_mean': s.tau_mean, 'update_rate': s.update_rate})}")
    for title, rows in (("level", s.by_level), ("subject", s.by_subject)):
        for key, v in rows.items():
            print(f"  {title} {key}: Avg@{s.k} {100 * v['avg_at_k']:.2f} ± {100 * v['avg_at_k_ci95']:.2f}  "
                  f"Pass@{s.k} {100 * v['pass_at_k']:.2f}  ({v['num_problems']} problems){trace(v)}")
    print(f"(± : half-width of a 95 % normal interval of Avg@{s.k} over problems)")
    print(f"records: {output}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .evaluate import compare_table, load_summary

    table = compare_table([load_summary(p) for p in args.results])
    print(table, end="")
    if args.output:
        Path(args.output).write_text(table)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import make_plots

    if not args.run and not args.eval:
        raise ValueError("plot needs --run DIR (training figures) and/or --eval FILE (evaluation figures)")
    written = make_plots([Path(r) for r in args.run], Path(args.output), Path(args.eval) if args.eval else None)
    print(f"wrote {len(written)} files; open {Path(args.output) / 'index.html'}")
    return 0
