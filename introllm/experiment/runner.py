"""``introllm experiment CONFIG.toml``: a grid of ``train`` and ``eval`` runs and a Markdown report.

The grid is methods x seeds x benchmarks. A method with a ``train`` table is trained once per
seed (``introllm train --seed S``) and its final checkpoint evaluated on every benchmark; a
method without one evaluates a checkpoint as it is (the base model, at a fixed tau, EAD...),
once per seed (the seed of the samples). A method with ``meanshift = true`` is also evaluated
at its MeanShift tau (training/meanshift.py) on each benchmark and seed: its own row; one with
``also_at = ["greedy", "fixed:0.3"]`` also under each of those policies (rows ``NAME at POLICY``).

Every job is a subprocess running the public CLI (the commands in the report are the ones that
ran), in order, one at a time. The experiment survives being stopped at any moment:

- a job is finished when its marker ``OUT/state/<job>.done.json`` exists (written atomically after
  the job succeeded, holding the job's command); finished jobs are skipped;
- a training job that was stopped continues with ``introllm train --resume`` from its last
  checkpoint (exact: same weights, optimizer and random state as an uninterrupted run);
- an evaluation writes its records atomically, so a stopped one is simply run again;
- a job whose command changed since it was started (the config was edited) starts afresh, and so
  do the evaluations of a training run that was redone.

Config file (TOML; every table except [experiment] and the lists is optional)::

    [experiment]
    name = "training"                 # title of the report
    output = "experiments/training"   # where runs, evaluations, logs and report.md go
    seeds = [0, 1, 2]
    baseline = "grpo 0.6"             # the row paired differences are taken against
    base = ""                         # checkpoint all methods start from ("" = the embedded model)

    [train]                           # flags of `introllm train` for every trained method
    steps = 30
    model_lr = 1e-5

    [eval]                            # flags of `introllm eval` for every evaluation
    k = 8
    limit = 64

    [[benchmark]]                     # settings: each method x seed is evaluated on each
    name = "arithmetic"
    dataset = "rg:basic_arithmetic"   # other keys are eval flags of this benchmark

    [[method]]
    name = "introllm"
    train = {method = "introllm"}     # any train flag; its presence makes the method trained
    policy = "learned"                # eval policy
    meanshift = true
    eval = {}                         # extra eval flags; strings may use {run}, {final}, {base}

Keys are the flags' names with underscores (``model_lr`` -> ``--model-lr``); true -> ``--flag``,
false -> ``--no-flag``, a table -> JSON, a list -> several values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from introllm.training.config import ConfigError

log = logging.getLogger(__name__)

RUNNER_TRAIN_FLAGS = {"output", "seed", "resume", "overwrite", "no_progress"}
RUNNER_EVAL_FLAGS = {"policy", "seed", "name", "output", "meanshift_from"}


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def slug(name: str) -> str:
    """A file-name-safe form of a row or benchmark name: ``"grpo 0.6"`` -> ``"grpo-0.6"``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-").lower() or "x"


@dataclass
class BenchmarkSpec:
    name: str
    """Name of the benchmark in the report (and its directory name)."""
    dataset: str
    """Benchmark file or rg:<task>, as ``introllm eval --dataset`` takes it."""
    eval: dict = field(default_factory=dict)
    """Further eval flags for this benchmark (num_problems, instruction, prompt_field...)."""

    def __post_init__(self) -> None:
        _check(bool(self.name), "benchmark.name", "must not be empty")
        _check(bool(self.dataset), f"benchmark {self.name}: dataset", "must not be empty")


@dataclass
class MethodSpec:
    name: str
    """Row name in the report."""
    train: dict | None = None
    """Flags of ``introllm train`` for this method, over the [train] table; absent: not trained."""
    policy: str = "learned"
    """Temperature policy of its evaluations (``introllm eval --policy``)."""
    meanshift: bool = False
    """Also evaluate at the token-mean tau of its ``policy`` evaluation: a row ``NAME MeanShift``."""
    mean_matched: float | None = None
    """Also evaluate its ``policy`` with every temperature moved so that their token mean is this tau
    (``eval --policy mean-matched:T``): a row ``NAME mean-matched T``."""
    also_at: list = field(default_factory=list)
    """Also evaluate its checkpoints under each of these common policies (``eval --policy``, e.g.
    ``["greedy", "fixed:0.3"]``): a row ``NAME at POLICY`` each. Every method of a grid evaluated at
    one temperature separates what training did to the model from the temperature it decodes at
    (issue 27)."""
    eval: dict = field(default_factory=dict)
    """Further eval flags (e.g. checkpoint = "{base}", head = "{final}" for a head-only run)."""
    checkpoint: str = ""
    """Untrained methods: the checkpoint to evaluate (default: [experiment] base)."""
    seeds: list | None = None
    """Seeds of this method (default: [experiment] seeds)."""

    def __post_init__(self) -> None:
        _check(bool(self.name), "method.name", "must not be empty")
        _check(
            self.train is None or isinstance(self.train, dict),
            f"method {self.name}: train",
            "must be a table of train flags",
        )
        _check(isinstance(self.eval, dict), f"method {self.name}: eval", "must be a table of eval flags")
        fixed = self.policy.startswith("fixed") or self.policy in ("greedy", "meanshift")
        for flag in ("meanshift", "mean_matched"):
            _check(
                not (getattr(self, flag) not in (None, False) and fixed),
                f"method {self.name}: {flag}",
                f"needs a policy whose temperature varies, not {self.policy!r}",
            )
        _check(
            isinstance(self.also_at, list) and all(isinstance(p, str) and p for p in self.also_at),
            f"method {self.name}: also_at",
            f'must be a list of eval policies such as ["greedy", "fixed:0.3"], got {self.also_at!r}',
        )
        _check(
            self.mean_matched is None or (isinstance(self.mean_matched, (int, float)) and self.mean_matched > 0),
            f"method {self.name}: mean_matched",
            f"must be a temperature > 0, got {self.mean_matched!r}",
        )
        for table, reserved in ((self.train or {}, RUNNER_TRAIN_FLAGS), (self.eval, RUNNER_EVAL_FLAGS)):
            bad = sorted(set(table) & reserved)
            _check(not bad, f"method {self.name}", f"{', '.join(bad)} are set by the experiment, not per method")
        if self.seeds is not None:
            _check(
                bool(self.seeds) and all(isinstance(s, int) for s in self.seeds),
                f"method {self.name}: seeds",
                "must be a non-empty list of integers",
            )


@dataclass
class ExperimentConfig:
    name: str
    """Title of the report."""
    output: str
    """Directory of runs, evaluations, logs, markers and report.md."""
    seeds: list
    """Seeds of every method (training seed and sampling seed of its evaluations)."""
    baseline: str
    """Row that paired differences are taken against (a method name, or 'NAME MeanShift')."""
    benchmarks: list
    """BenchmarkSpec list: the settings every method is evaluated on."""
    methods: list
    """MethodSpec list."""
    base: str = ""
    """Checkpoint every method starts from ('' = the embedded SmolLM2-135M-Instruct)."""
    train: dict = field(default_factory=dict)
    """Flags of ``introllm train`` shared by all trained methods."""
    eval: dict = field(default_factory=dict)
    """Flags of ``introllm eval`` shared by all evaluations (k, n, limit, max_new_tokens...)."""
    bootstrap_resamples: int = 10000
    """Bootstrap resamples of the report's intervals."""
    bootstrap_seed: int = 0
    """Seed of the resampling (equal seeds give equal intervals)."""
    confidence: float = 0.95
    """Coverage of the intervals."""
    comparisons: list = field(default_factory=list)
    """Pairs of rows [a, b] whose difference a - b the report gives with both kinds of interval:
    the bootstrap over problems and a t-interval over seeds (paired where both rows have the seed)."""
    source: str = ""
    """The config file's text, reproduced in the report."""

    def __post_init__(self) -> None:
        _check(bool(self.output), "experiment.output", "must not be empty")
        _check(
            bool(self.seeds) and all(isinstance(s, int) and 0 <= s < 2**31 for s in self.seeds),
            "experiment.seeds",
            f"must be a non-empty list of integers in [0, 2**31), got {self.seeds!r}",
        )
        _check(len(set(self.seeds)) == len(self.seeds), "experiment.seeds", "must not repeat")
        _check(bool(self.benchmarks), "benchmark", "at least one [[benchmark]] table is needed")
        _check(bool(self.methods), "method", "at least one [[method]] table is needed")
        for kind, items in (("benchmark", self.benchmarks), ("method", self.methods)):
            names = [slug(x.name) for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            _check(not dup, kind, f"names must differ (as file names): {', '.join(dup)}")
        rows = self.row_names()
        for pair in self.comparisons:
            _check(
                isinstance(pair, list) and len(pair) == 2,
                "experiment.comparisons",
                f"each entry is [row a, row b], got {pair!r}",
            )
            unknown = [r for r in pair if r not in rows]
            _check(
                not unknown,
                "experiment.comparisons",
                f"{', '.join(map(repr, unknown))} is not a row; rows: {', '.join(rows)}",
            )
        _check(self.baseline in rows, "experiment.baseline", f"{self.baseline!r} is not a row; rows: {', '.join(rows)}")
        _check(
            self.bootstrap_resamples >= 100,
            "experiment.bootstrap_resamples",
            f"must be >= 100, got {self.bootstrap_resamples}",
        )
        _check(0 < self.confidence < 1, "experiment.confidence", f"must be in (0, 1), got {self.confidence}")
        for table, reserved, where in (
            (self.train, RUNNER_TRAIN_FLAGS, "train"),
            (self.eval, RUNNER_EVAL_FLAGS, "eval"),
        ):
            bad = sorted(set(table) & reserved)
            _check(not bad, f"[{where}]", f"{', '.join(bad)} are set by the experiment")

    def row_names(self) -> list[str]:
        rows = []
        for m in self.methods:
            rows.append(m.name)
            if m.meanshift:
                rows.append(f"{m.name} MeanShift")
            if m.mean_matched is not None:
                rows.append(mean_matched_row(m))
            rows.extend(also_at_row(m, p) for p in m.also_at)
        return rows

    def seeds_of(self, method: MethodSpec) -> list[int]:
        return list(method.seeds if method.seeds is not None else self.seeds)


def mean_matched_row(method: MethodSpec) -> str:
    """The report row of a method's mean-matched evaluation: ``NAME mean-matched T``."""
    return f"{method.name} mean-matched {method.mean_matched:g}"


def also_at_row(method: MethodSpec, policy: str) -> str:
    """The report row of a method evaluated under a common policy: ``NAME at POLICY``."""
    return f"{method.name} at {policy}"


def load_experiment(path: str | Path, output: str = "") -> ExperimentConfig:
    """Read and validate an experiment config file (TOML, never executed); ConfigError names the
    offending table and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config {path} does not exist")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - {"experiment", "train", "eval", "benchmark", "method"})
    _check(
        not unknown,
        str(path),
        f"unknown table(s) {', '.join(unknown)}; valid: experiment, train, eval, benchmark, method",
    )
    exp = dict(raw.get("experiment") or {})
    allowed = {f.name for f in dataclasses.fields(ExperimentConfig)} - {
        "benchmarks",
        "methods",
        "train",
        "eval",
        "source",
    }
    bad = sorted(set(exp) - allowed)
    _check(not bad, "[experiment]", f"unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(allowed))}")
    for key in ("name", "output", "seeds", "baseline"):
        _check(key in exp or (key == "output" and output), f"[experiment] {key}", "is required")

    def build(cls, tables, kind):
        _check(isinstance(tables, list), kind, f"use [[{kind}]] tables")
        valid = {f.name for f in dataclasses.fields(cls)}
        out = []
        for t in tables:
            if cls is BenchmarkSpec:  # a benchmark's other keys are its eval flags
                t = {
                    "name": t.get("name", ""),
                    "dataset": t.get("dataset", ""),
                    "eval": {k: v for k, v in t.items() if k not in ("name", "dataset")},
                }
            bad = sorted(set(t) - valid)
            _check(
                not bad,
                f"[[{kind}]] {t.get('name', '')}",
                f"unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}",
            )
            _check("name" in t, f"[[{kind}]]", "every table needs a name")
            out.append(cls(**t))
        return out

    if output:
        exp["output"] = output
    return ExperimentConfig(
        **exp,
        train=dict(raw.get("train") or {}),
        eval=dict(raw.get("eval") or {}),
        benchmarks=build(BenchmarkSpec, raw.get("benchmark") or [], "benchmark"),
        methods=build(MethodSpec, raw.get("method") or [], "method"),
        source=text,
    )


# --------------------------------------------------------------------------- the plan


def flags(values: dict[str, Any]) -> list[str]:
    """Command-line flags from a table: ``{"model_lr": 1e-5, "mask_truncated": True}`` ->
    ``["--model-lr", "1e-05", "--mask-truncated"]``; false -> ``--no-NAME``, a table -> JSON,
    a list -> its values after the flag."""
    out: list[str] = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            out += [flag, json.dumps(value, sort_keys=True)]
        elif isinstance(value, (list, tuple)):
            out += [flag, *(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


@dataclass
class Job:
    """One subprocess of the grid."""

    id: str
    """Unique, file-name-safe: train.METHOD.sSEED, eval.BENCH.ROW.sSEED."""
    kind: str
    """'train' or 'eval'."""
    argv: list
    """Arguments after ``introllm`` (what the report prints)."""
    row: str = ""
    """Report row (evaluations)."""
    method: str = ""
    seed: int = 0
    benchmark: str = ""
    run_dir: str = ""
    """train: the run directory."""
    records: str = ""
    """eval: the records file."""
    after: list = field(default_factory=list)
    """Ids of jobs that must finish first."""

    def command(self) -> str:
        return "introllm " + shlex.join(self.argv)


def plan(cfg: ExperimentConfig) -> list[Job]:
    """Every job of the grid in the order they run: per seed, per method, its training then its
    evaluations (so a study stopped early holds complete seeds, not half of everything)."""
    out = Path(cfg.output)
    jobs: list[Job] = []
    all_seeds = list(dict.fromkeys(s for m in cfg.methods for s in cfg.seeds_of(m)))
    for seed in all_seeds:
        for m in cfg.methods:
            if seed not in cfg.seeds_of(m):
                continue
            run_dir = out / "runs" / slug(m.name) / f"seed{seed}"
            after: list[str] = []
            places = {"run": str(run_dir), "final": str(run_dir / "final"), "base": cfg.base}
            if m.train is not None:
                train_flags = {**cfg.train, **m.train}
                if cfg.base and "model" not in train_flags:
                    train_flags["model"] = cfg.base
                argv = ["train", *flags(train_flags), "--seed", str(seed), "--output", str(run_dir), "--no-progress"]
                jobs.append(
                    Job(f"train.{slug(m.name)}.s{seed}", "train", argv, method=m.name, seed=seed, run_dir=str(run_dir))
                )
                after = [jobs[-1].id]
                checkpoint = places["final"]
            else:
                checkpoint = m.checkpoint or cfg.base
            for b in cfg.benchmarks:
                ev = {**cfg.eval, **b.eval, **m.eval}
                ev = {k: v.format(**places) if isinstance(v, str) else v for k, v in ev.items()}
                ev.setdefault("checkpoint", checkpoint)
                ev["dataset"] = b.dataset
                base_dir = out / "evals" / slug(b.name)
                records = base_dir / slug(m.name) / f"seed{seed}.jsonl"
                argv = [
                    "eval",
                    *flags(ev),
                    "--policy",
                    m.policy,
                    "--seed",
                    str(seed),
                    "--name",
                    m.name,
                    "--output",
                    str(records),
                ]
                jobs.append(
                    Job(
                        f"eval.{slug(b.name)}.{slug(m.name)}.s{seed}",
                        "eval",
                        argv,
                        row=m.name,
                        method=m.name,
                        seed=seed,
                        benchmark=b.name,
                        records=str(records),
                        after=list(after),
                    )
                )
                learned_job = jobs[-1].id

                def derived_job(row: str, policy: str, extra: list[str], after: list[str]) -> Job:
                    """An evaluation of the same checkpoint as its own report row: under ``policy``
                    with ``extra`` flags (e.g. the learned evaluation's records to resolve it from)."""
                    row_records = base_dir / slug(row) / f"seed{seed}.jsonl"
                    argv = ["eval", *flags(ev), "--policy", policy, *extra, "--seed", str(seed), "--name", row]
                    return Job(
                        f"eval.{slug(b.name)}.{slug(row)}.s{seed}",
                        "eval",
                        argv + ["--output", str(row_records)],
                        row=row,
                        method=m.name,
                        seed=seed,
                        benchmark=b.name,
                        records=str(row_records),
                        after=after,
                    )

                for policy in m.also_at:  # the same checkpoints under a policy common to every method
                    jobs.append(derived_job(also_at_row(m, policy), policy, [], list(after)))
                derived = []
                if m.meanshift:
                    derived.append((f"{m.name} MeanShift", "meanshift"))
                if m.mean_matched is not None:
                    derived.append((mean_matched_row(m), f"mean-matched:{m.mean_matched:g}"))
                for row, policy in derived:  # resolved from the learned evaluation's records
                    jobs.append(derived_job(row, policy, ["--meanshift-from", str(records)], [learned_job]))
    return jobs


def check_tables(cfg: ExperimentConfig) -> list[str]:
    """Build every job's configs in this process, as the commands will (``TrainConfig`` from a trained
    method's [train] table, the three eval configs from each evaluation's [eval] tables): one line per
    table that would fail, naming the method or benchmark, so a typo or an out-of-range value fails
    now, not after hours. Nothing runs."""
    from introllm.commands.evaluate import eval_configs
    from introllm.sampler.policies import build_policy
    from introllm.training.config import TrainConfig

    problems = []
    for m in cfg.methods:
        places = {"run": "RUN", "final": "RUN/final", "base": cfg.base}
        if m.train is not None:
            try:
                TrainConfig.from_flat({**cfg.train, **m.train})
            except ValueError as e:
                problems.append(f"method {m.name} [train]: {e}")
        for b in cfg.benchmarks:
            ev = {**cfg.eval, **b.eval, **m.eval}
            ev = {k: v.format(**places) if isinstance(v, str) else v for k, v in ev.items()}
            ev.update(dataset=b.dataset, policy=m.policy if m.policy != "meanshift" else "learned")
            try:
                eval_configs(ev)
            except ValueError as e:
                problems.append(f"method {m.name} on {b.name} [eval]: {e}")
        for policy in m.also_at:  # a policy common to every method: one that needs no head
            try:
                build_policy(policy)
            except ValueError as e:
                problems.append(f"method {m.name}: also_at {policy!r}: {e}")
    return problems


# --------------------------------------------------------------------------- running


class Runner:
    """Runs a plan's jobs in order with markers in ``OUT/state`` and logs in ``OUT/logs``."""

    def __init__(self, cfg: ExperimentConfig, jobs: list[Job], report_to: str | None = None):
        """report_to: trackers for every training job (``train --report-to``), added when a job runs
        and not part of its command's identity: turning a tracker on does not make finished jobs stale."""
        self.cfg, self.jobs, self.report_to = cfg, jobs, report_to
        self.by_id = {j.id: j for j in jobs}
        self.out = Path(cfg.output)
        self.state, self.logs = self.out / "state", self.out / "logs"

    def marker(self, job: Job, kind: str = "done") -> Path:
        return self.state / f"{job.id}.{kind}.json"

    def _digest(self, job: Job) -> str:
        """Fingerprint of a finished job: its done marker's text (command, results, inputs)."""
        return hashlib.sha256(self.marker(job).read_bytes()).hexdigest()[:16]

    def is_done(self, job: Job) -> bool:
        """Finished with this very command, after the very jobs it depends on: a marker for another
        command is stale, and so is an evaluation of a training run that has been redone since."""
        m = self.marker(job)
        if not m.is_file():
            return False
        done = json.loads(m.read_text())
        if done.get("argv") != job.argv:
            return False
        deps = [self.by_id[d] for d in job.after]
        return all(self.is_done(d) for d in deps) and done.get("after", {}) == {d.id: self._digest(d) for d in deps}

    def status(self, job: Job) -> str:
        """'done', 'resume <checkpoint>', 'restart' (started with another command) or 'todo'."""
        if self.is_done(job):
            return "done"
        started = self.marker(job, "started")
        if not started.is_file():
            return "todo"
        if json.loads(started.read_text()).get("argv") != job.argv:
            return "restart"
        if job.kind == "train":
            from introllm.training.state import latest_checkpoint

            ckpt = latest_checkpoint(Path(job.run_dir)) if Path(job.run_dir).is_dir() else None
            if ckpt is not None:
                return f"resume {ckpt.name}"
        return "restart"

    def _write(self, path: Path, value: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value, indent=1) + "\n")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def run(self) -> None:
        """Run every job not yet done. Raises RuntimeError (naming the log file) if a job fails."""
        total = len(self.jobs)
        for i, job in enumerate(self.jobs, 1):
            status = self.status(job)
            if status == "done":
                log.info("[%d/%d] %s: done, skipped", i, total, job.id)
                continue
            if (
                status == "resume final"
            ):  # stopped after its final checkpoint was written (atomically), before its marker
                self._write(self.marker(job), {"argv": job.argv, **self._result(job), "after": {}})
                log.info("[%d/%d] %s: finished before the stop, recorded", i, total, job.id)
                continue
            argv = list(job.argv)
            if status.startswith("resume"):
                argv += ["--resume", job.run_dir]
            elif job.kind == "train":
                argv += ["--overwrite"]  # a run directory without a checkpoint (or from another command)
            if job.kind == "train" and self.report_to:
                argv += ["--report-to", self.report_to]
            self._write(self.marker(job, "started"), {"argv": job.argv})
            self.logs.mkdir(parents=True, exist_ok=True)
            log_path = self.logs / f"{job.id}.log"
            log.info(
                "[%d/%d] %s: %s (log: %s)",
                i,
                total,
                job.id,
                "resuming from " + status.split()[1] if status.startswith("resume") else "running",
                log_path,
            )
            t0 = time.monotonic()
            rc = self._subprocess(argv, log_path)
            if rc != 0:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"{job.id} failed (exit {rc}); see {log_path}:\n  " + "\n  ".join(tail))
            after = {d: self._digest(self.by_id[d]) for d in job.after}
            self._write(self.marker(job), {"argv": job.argv, **self._result(job), "after": after})
            log.info("[%d/%d] %s: finished in %.0f s", i, total, job.id, time.monotonic() - t0)

    def _result(self, job: Job) -> dict:
        if job.kind == "train":
            return {"final": str(Path(job.run_dir) / "final")}
        from introllm.training.evaluate import load_summary

        s = load_summary(job.records)
        return {"records": job.records, "policy": s.policy, "avg_at_k": s.avg_at_k, "pass_at_k": s.pass_at_k}

    def _subprocess(self, argv: list[str], log_path: Path) -> int:
        """Run ``python -m introllm ARGV`` with its output in ``log_path``. A stop of this process
        stops the job too, so that nothing keeps writing behind a restart: Ctrl-C and SIGTERM
        terminate it here, and on Linux the kernel kills it if this process dies (even by SIGKILL)."""
        with open(log_path, "a") as logf:
            logf.write(f"\n$ introllm {shlex.join(argv)}\n")
            logf.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "introllm", *argv],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            try:
                return proc.wait()
            except BaseException:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGKILL when the parent dies (prctl
    PR_SET_PDEATHSIG); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def exclusive(output: Path):
    """Hold ``OUT/.lock`` so that two experiments never write the same directory at once."""
    import fcntl

    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"output: another introllm experiment is running in {output}") from None
        yield
