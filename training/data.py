"""Training problems: where they come from, how they become prompts, and the order they are seen in.

Sources, chosen by the form of ``DataConfig.dataset``:

    rg:<task>[,<task>...]         reasoning-gym generators (offline), each scored by its own scorer
    path/to/file.jsonl|json|csv|parquet   local rows with configurable prompt / answer fields
    owner/name                    a Hugging Face dataset (needs the hub; offline: a clear error)
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    the last ``eval_size`` held out (of a mix of reasoning-gym tasks: the same number of each).
    Fails with a DataError on an empty or malformed dataset."""
    problems = read_problems(cfg)
    seen: set[str] = set()
    unique = [p for p in problems if not (p.prompt in seen or seen.add(p.prompt))]
    random.Random(seed).shuffle(unique)
    n_eval = min(cfg.eval_size, len(unique) - 1)
    if cfg.eval_size and len(unique) - cfg.eval_size < 1:
        raise DataError(
            f"dataset {cfg.dataset} has {len(unique)} distinct problems: too few to hold out eval_size={cfg.eval_size}"
        )
    sources = list(dict.fromkeys(p.source for p in problems))  # task order
    if (
        len(sources) > 1 and cfg.eval_size
    ):  # a mix of tasks: hold out the same number of each (the first get the remainder)
        share = {
            src: cfg.eval_size // len(sources) + (i < cfg.eval_size % len(sources)) for i, src in enumerate(sources)
        }
        held = []
        for p in reversed(unique):
            if share[p.source] > 0:
                share[p.source] -= 1
                held.append(p)
        if any(share.values()):
            raise DataError(
                f"dataset {cfg.dataset}: too few distinct problems of {', '.join(s for s, n in share.items() if n)} "
                f"to hold out eval_size={cfg.eval_size} evenly"
            )
        ids = {id(p) for p in held}
        held_out = [p for p in unique if id(p) in ids]
        return [p for p in unique if id(p) not in ids], held_out
    return unique[: len(unique) - n_eval], unique[len(unique) - n_eval :]


def rg_tasks(dataset: str) -> list[str]:
    """The reasoning-gym task names of ``rg:<task>[,<task>...]`` (DataError on an unknown one)."""
    import reasoning_gym

    tasks = [t.strip().removeprefix("rg:") for t in dataset[3:].split(",") if t.strip()]
    if not tasks:
        raise DataError(f"{dataset!r}: name a reasoning-gym task after rg:")
    for task in tasks:
        if task not in reasoning_gym.factory.DATASETS:
            close = [n for n in sorted(reasoning_gym.factory.DATASETS) if task[:4] in n][:8]
            raise DataError(
                f"unknown reasoning-gym task {task!r}" + (f"; similar: {', '.join(close)}" if close else "")
            )
    if len(set(tasks)) != len(tasks):
        raise DataError(f"{dataset!r} names a task twice")
    return tasks


def rg_task_args(tasks: list[str], rg_args: dict) -> dict[str, dict]:
    """Generator arguments per task. ``rg_args`` is either per task ({"task": {...}}: every key a
    reasoning-gym task name with a table as value; tasks not named get {}, their generator's own
    defaults; named tasks not in the mix are ignored) or flat ({"arg": value}: the one task's)."""
    import reasoning_gym

    keyed = bool(rg_args) and all(
        k in reasoning_gym.factory.DATASETS and isinstance(v, dict) for k, v in rg_args.items()
    )
    if keyed or not rg_args:
        return {t: dict(rg_args.get(t, {})) for t in tasks}
    if len(tasks) > 1:
        raise DataError(
            f"rg_args {rg_args} is one task's arguments, but the dataset mixes {', '.join(tasks)}; "
            'give them per task: {"task": {"arg": value}, ...}'
        )
    return {tasks[0]: dict(rg_args)}


@loader("rg")
def _reasoning_gym(cfg: DataConfig, dataset: str) -> list[Problem]:
    """Problems of one or several reasoning-gym generators (``subject`` is the task name)."""
    import reasoning_gym

    tasks = rg_tasks(dataset)
    out = []
    for task, kwargs in rg_task_args(tasks, cfg.rg_args).items():
        try:
            ds = reasoning_gym.create_dataset(task, size=cfg.num_problems, seed=12345, **kwargs)
        except (TypeError, ValueError, AssertionError) as e:
            raise DataError(f"reasoning-gym task {task!r} rejected rg_args {kwargs}: {e}") from None
        for i, entry in enumerate(ds):
            meta = entry.get("metadata") or {}
            level = meta.get("difficulty")
            out.append(
                Problem(
                    id=f"{task}-{i}",
                    prompt=str(entry["question"]),
                    answer=str(entry["answer"]),
                    level=None
                    if len(tasks) > 1 or level is None
                    else (json.dumps(level, sort_keys=True, default=str) if isinstance(level, dict) else str(level)),
                    subject=task if len(tasks) > 1 else None,
                    source=f"rg:{task}",
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
        if isinstance(answer, list):  # OlympiadBench: final_answer is a list (several for multi-answer problems)
            answer = ", ".join(str(a) for a in answer) if answer else None
        if cfg.answer_boxed and answer is not None:
            answer = last_boxed(str(answer))
            if answer is None:
                raise DataError(
                    f"{label}: no \\boxed{{...}} in field {cfg.answer_field!r} (answer_boxed takes the answer from there)"
                )
        if answer is None or str(answer).strip() == "":
            rid = row.get("id", row.get("unique_id"))
            raise DataError(
                f"{label}{f' (id {rid})' if rid is not None else ''}: no answer in field {cfg.answer_field!r}"
            )
        out.append(
            Problem(
                id=str(row.get("id", row.get("unique_id", i))),
                prompt=str(row[prompt_key]),
                answer=str(answer),
                level=None if row.get("level") is None else str(row["level"]),
                subject=_subject(row),
            )
        )
    return out


def _subject(row: dict) -> str | None:
    for key in ("subject", "type", "subfield"):  # MATH, Minerva, OlympiadBench
        if row.get(key) is not None:
            return str(row[key])
    return None


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} in ``text`` (braces balanced), or None.

    >>> last_boxed(r"so $\\boxed{\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None


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
        raise DataError(
            f"{name!r} is not a local file; Hugging Face datasets need the 'datasets' package "
            "(pip install datasets) and a reachable hub, or pass a local .jsonl/.csv/.parquet file"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=cfg.split)
    except Exception as e:  # network, auth and missing-dataset errors all end here
        raise DataError(
            f"could not load Hugging Face dataset {name!r} ({type(e).__name__}); offline, pass a local "
            ".jsonl/.csv/.parquet file instead"
        ) from None
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
