"""``introllm experiment CONFIG.toml``: run (or continue) a grid of train and eval jobs and write its
report (``introllm.experiment``)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from introllm.experiment import runner
from introllm.training.config import REPORT_TO, ConfigError

from .common import epilog_parser

EXAMPLES = """\
examples:
  introllm experiment experiments/training.toml --dry-run    the plan: every job, its state and command
  introllm experiment experiments/training.toml              run (or continue) it, then write the report
  introllm experiment experiments/training.toml --report-only   the report from the jobs finished so far

Stop it at any moment (Ctrl-C, kill) and run the same command again: finished jobs are skipped,
a stopped training resumes from its last checkpoint. Report: OUTPUT/report.md.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = epilog_parser(
        sub,
        "experiment",
        help="a grid of train and eval runs (methods x seeds x benchmarks) and a Markdown report",
        description=(runner.__doc__ or "").split("\n\n")[0].replace("``", ""),
        epilog=EXAMPLES,
    )
    p.add_argument("config", metavar="CONFIG.toml", help="experiment config file (format: docs/results.md)")
    p.add_argument("--output", default="", metavar="DIR", help="override [experiment] output")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (jobs, their state, commands) and check the commands' flags; run nothing",
    )
    p.add_argument("--report-only", action="store_true", help="write the report from the finished jobs; run nothing")
    p.add_argument(
        "--report-to",
        choices=REPORT_TO,
        default=None,
        help="send every training job's figures to these trackers too (train --report-to); finished jobs stay finished",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from introllm.experiment.report import write_report

    cfg = runner.load_experiment(args.config, args.output)
    jobs = runner.plan(cfg)
    problems = runner.check_tables(cfg)
    job_runner = runner.Runner(cfg, jobs, report_to=args.report_to)
    if args.dry_run:
        print(
            f"experiment {cfg.name!r}: {len(jobs)} jobs in {cfg.output} "
            f"({sum(j.kind == 'train' for j in jobs)} train, {sum(j.kind == 'eval' for j in jobs)} eval)"
        )
        for i, job in enumerate(jobs, 1):
            print(f"[{i}/{len(jobs)}] {job.id} ({job_runner.status(job)})\n    {job.command()}")
        for line in problems:
            print(f"error: {line}")
        return 2 if problems else 0
    if problems:
        raise ConfigError("these commands would fail:\n  " + "\n  ".join(problems))

    def stop(signum, frame):  # SIGTERM: stop the running job cleanly, as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with runner.exclusive(Path(cfg.output)):
        if not args.report_only:
            try:
                job_runner.run()
            except RuntimeError as e:  # a job failed: its log says why; no traceback of ours
                print(f"introllm experiment: error: {e}", file=sys.stderr)
                return 1
        report = write_report(cfg, jobs, done={j.id for j in jobs if job_runner.is_done(j)})
    print(f"report: {report}")
    return 0
