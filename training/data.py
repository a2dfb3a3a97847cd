"""Training problems: where they come from, how they become prompts, and the order they are seen in.

Sources, chosen by the form of ``DataConfig.dataset``:

    rg:<task>                     a reasoning-gym generator (offline), scored by its own scorer
    path/to/file.jsonl|json|csv|parquet   local rows with configurable prompt / answer fields
    owner/name                    a Hugging Face dataset (needs the hub; offline: a clear error)
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import ConfigError, DataConfig


class DataError(ValueError):
    """The dataset cannot be used; the message names the file, row or field."""


@dataclass
class Problem:
    """One task with a checkable answer."""

    id: str
    prompt: str  # the problem text, without the answer-format instruction
    answer: str  # reference answer
    level: str | None = None  # difficulty level, where the data has one
    subject: str | None = None
    source: str = ""  # "rg:<task>" for reasoning-gym problems (selects their scorer), else ""
    metadata: dict[str, Any] = field(default_factory=dict)  # what a reasoning-gym scorer needs


_LOADERS: dict[str, Callable[[DataConfig, str], list[Problem]]] = {}


def loader(kind: str):
    def wrap(fn):
        _LOADERS[kind] = fn
        return fn

    return wrap


def source_kind(dataset: str) -> str:
    if dataset.startswith("rg:"):
        return "rg"
    suffix = Path(dataset).suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".parquet"):
        return suffix[1:]
    if Path(dataset).exists():
        raise DataError(f"{dataset}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .csv or .parquet")
    return "hub"


def read_problems(cfg: DataConfig) -> list[Problem]:
    """Every problem of the dataset, in file order. Fails with a DataError on an empty or malformed dataset."""
    problems = _LOADERS[source_kind(cfg.dataset)](cfg, cfg.dataset)
    if not problems:
        raise DataError(f"dataset {cfg.dataset} has no problems")
    return problems


def load_problems(cfg: DataConfig, *, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out): all problems, duplicates (same prompt) dropped, shuffled with ``seed``,
    the last ``eval_size`` held out. Fails with a DataError on an empty or malformed dataset."""
    problems = read_problems(cfg)
    seen: set[str] = set()
    unique = [p for p in problems if not (p.prompt in seen or seen.add(p.prompt))]
    random.Random(seed).shuffle(unique)
    n_eval = min(cfg.eval_size, len(unique) - 1)
    if cfg.eval_size and len(unique) - cfg.eval_size < 1:
        raise DataError(f"dataset {cfg.dataset} has {len(unique)} distinct problems: too few to hold out eval_size={cfg.eval_size}")
    return unique[: len(unique) - n_eval], unique[len(unique) - n_eval :]


@loader("rg")
def _reasoning_gym(cfg: DataConfig, dataset: str) -> list[Problem]:
    import reasoning_gym

    task = dataset[3:]
    if task not in reasoning_gym.factory.DATASETS:
        close = [n for n in sorted(reasoning_gym.factory.DATASETS) if task[:4] in n][:8]
        raise DataError(f"unknown reasoning-gym task {task!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    try:
        ds = reasoning_gym.create_dataset(task, size=cfg.num_problems, seed=12345, **cfg.rg_args)
    except (TypeError, ValueError, AssertionError) as e:
        raise DataError(f"reasoning-gym task {task!r} rejected rg_args {cfg.rg_args}: {e}") from None
    out = []
    for i, entry in enumerate(ds):
        meta = entry.get("metadata") or {}
        level = meta.get("difficulty")
        out.append(
            Problem(
                id=f"{task}-{i}",
                prompt=str(entry["question"]),
                answer=str(entry["answer"]),
                level=json.dumps(level, sort_keys=True, default=str) if isinstance(level, dict) else (None if level is None else str(level)),
                source=dataset,
                metadata=json.loads(json.dumps(entry, default=str)),
            )
        )
    return out


def _rows_to_problems(rows: list[dict], cfg: DataConfig, where: str) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        label = f"{where} row {i + 1}"
        if not isinstance(row, dict):
            raise DataError(f"{label}: expected an object with fields, got {type(row).__name__}")
        prompt_key = cfg.prompt_field if cfg.prompt_field in row else ("problem" if "problem" in row else None)
        if prompt_key is None or row.get(prompt_key) in (None, ""):
            raise DataError(f"{label}: no problem text in field {cfg.prompt_field!r}")
        answer = row.get(cfg.answer_field)
        if answer is None or str(answer).strip() == "":
            rid = row.get("id", row.get("unique_id"))
            raise DataError(f"{label}{f' (id {rid})' if rid is not None else ''}: no answer in field {cfg.answer_field!r}")
        out.append(
            Problem(
                id=str(row.get("id", row.get("unique_id", i))),
                prompt=str(row[prompt_key]),
                answer=str(answer),
                level=None if row.get("level") is None else str(row["level"]),
                subject=None if row.get("subject", row.get("type")) is None else str(row.get("subject", row.get("type"))),
            )
        )
    return out


@loader("jsonl")
def _jsonl(cfg: DataConfig, path: str) -> list[Problem]:
    rows = []
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {n}: not valid JSON ({e.msg})") from None
    return _rows_to_problems(rows, cfg, path)


@loader("json")
def _json(cfg: DataConfig, path: str) -> list[Problem]:
    with _open(path) as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if isinstance(rows, dict):  # {"data": [...]} and similar
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 else None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a list of rows")
    return _rows_to_problems(rows, cfg, path)


@loader("csv")
def _csv(cfg: DataConfig, path: str) -> list[Problem]:
    with _open(path) as f:
        return _rows_to_problems(list(csv.DictReader(f)), cfg, path)


@loader("parquet")
def _parquet(cfg: DataConfig, path: str) -> list[Problem]:
    _open(path).close()
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'introllm[parquet]'") from None
    return _rows_to_problems(pq.read_table(path).to_pylist(), cfg, path)


@loader("hub")
def _hub(cfg: DataConfig, name: str) -> list[Problem]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name!r} is not a local file; Hugging Face datasets need the 'datasets' package "
                        "(pip install datasets) and a reachable hub, or pass a local .jsonl/.csv/.parquet file") from None
    try:
        ds = datasets.load_dataset(name, split=cfg.split)
    except Exception as e:  # network, auth and missing-dataset errors all end here
        raise DataError(f"could not load Hugging Face dataset {name!r} ({type(e).__name__}); offline, pass a local "
                        ".jsonl/.csv/.parquet file instead") from None
    return _rows_to_problems(list(ds), cfg, name)


def _open(path: str):
    try:
        return open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"dataset file {path} does not exist") from None


def format_prompt(problem: Problem, cfg: DataConfig) -> str:
    """The user-facing text of a prompt: problem plus the answer-format instruction."""
    if cfg.template == "plain":
        return cfg.prompt_template.format(problem=problem.prompt, instruction=cfg.instruction)
    return f"{problem.prompt}\n{cfg.instruction}".strip()


def encode_prompt(problem: Problem, cfg: DataConfig, tokenizer) -> list[int]:
    from introllm.sampler.text import prompt_ids

    text = format_prompt(problem, cfg)
    return prompt_ids(tokenizer, text, chat=cfg.template == "chat", system=cfg.system or None)


class ProblemStream:
    """Endless batches in a seeded order, reshuffled every epoch. Its position is two integers,
    so a resumed run continues with exactly the batches it would have seen."""

    def __init__(self, problems: list[Problem], seed: int):
        if not problems:
            raise DataError("no training problems")
        self.problems, self.seed = problems, seed
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next(self, n: int) -> list[Problem]:
        out = []
        while len(out) < n:
            if self.index == len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            out.append(self.problems[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)


def check_data_config(cfg: DataConfig) -> None:
    """Config-level checks that need the source kind (run before anything heavy)."""
    if cfg.reward == "rg" and source_kind(cfg.dataset) != "rg":
        raise ConfigError(f"reward: 'rg' needs an rg:<task> dataset, got {cfg.dataset!r}")
