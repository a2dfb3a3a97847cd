"""``introllm``: one command, one subcommand per job.

    introllm serve                 OpenAI-compatible HTTP server with per-token temperature traces
    introllm complete "prompt"     ask a running server; show each token coloured by its temperature
    introllm generate "prompt"     decode in-process with the learned temperature, show the trace
    introllm bench                 engine vs Hugging Face generate, learned vs fixed temperature
    introllm train                 RL fine-tuning of model and temperature head -> checkpoints
    introllm eval                  Avg@k / Pass@k on a benchmark, per-token traces to JSONL
    introllm compare RESULT...     Markdown table of evaluation results (paper Table 1 shape)
    introllm plot --run DIR        the paper's figures as PNG files plus index.html
    introllm experiment CONFIG     a grid of train and eval runs, resumable, and a Markdown report

Heavy imports (torch, transformers) happen inside the subcommands so that ``--help`` is instant.
Expected failures (bad flags, a missing checkpoint, an unknown policy) print one line and exit 2;
set INTROLLM_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from introllm.commands import bench, complete, evaluate, experiment, generate, serve, train

log = logging.getLogger("introllm")


def build_parser() -> argparse.ArgumentParser:
    """The ``introllm`` parser: one subcommand per module of ``introllm.commands``."""
    parser = argparse.ArgumentParser(
        prog="introllm",
        description="Learned-temperature decoding: a temperature head on the LLM's hidden state "
        "picks, token by token, how much randomness to use.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parsers(sub)  # eval, compare, plot
    experiment.add_parser(sub)
    complete.add_parser(sub)
    generate.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.WARNING if args.quiet else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        logging.basicConfig(
            level=level,
            format="%(message)s",
            handlers=[RichHandler(show_path=False, show_time=args.command == "serve")],
        )
    else:  # logs to a file or a container: one plain line each
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP call is noise here
    from introllm.clients import IntroLLMError
    from introllm.sampler.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (ValueError, CheckpointError, OSError, NotImplementedError, IntroLLMError) as e:
        if os.environ.get("INTROLLM_DEBUG"):
            raise
        print(f"introllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
