"""The layout's rules (DESIGN.md, README's design section), checked on the source:

- libraries (sampler, server, training, clients) never import the top floor (``introllm.cli``,
  ``introllm.commands``, ``introllm.experiment``) or the benchmarks; ``clients`` imports nothing
  of ours and ``sampler`` neither ``server`` nor ``training``;
- no import circle between modules, counting imports inside functions too;
- every subcommand keeps the flags and defaults recorded before the layout move
  (tests/data/cli-flags.json).
"""

import argparse
import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "sampler": "introllm.sampler",
    "server": "introllm.server",
    "training": "introllm.training",
    "clients": "introllm.clients",
    "benchmarks": "introllm.benchmarks",
    "introllm": "introllm",
}
TOP_FLOOR = ("introllm.cli", "introllm.commands", "introllm.experiment", "introllm.benchmarks")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:-1]]
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every introllm module ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m.startswith("introllm")}


def _graph() -> dict[str, set[str]]:
    files = [p for d in PACKAGES for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path):
            while imp and imp not in modules:  # `from introllm.sampler import Engine` -> introllm.sampler
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def test_libraries_never_import_the_top_floor_and_dependencies_point_one_way():
    graph = _graph()
    bad = []
    for module, deps in graph.items():
        library = module.split(".")[1] if module.count(".") else ""
        for dep in deps:
            if library in ("sampler", "server", "training", "clients") and any(
                dep == t or dep.startswith(t + ".") for t in TOP_FLOOR
            ):
                bad.append(f"{module} -> {dep}")
            if library == "clients" and not dep.startswith("introllm.clients"):
                bad.append(f"{module} -> {dep} (clients depend on nothing of ours)")
            if library == "sampler" and dep.startswith(("introllm.server", "introllm.training")):
                bad.append(f"{module} -> {dep} (the sampler depends on neither server nor training)")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_circle():
    graph = _graph()
    # package __init__ files re-export their modules: an edge into a package's own __init__ is not a cycle
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if node.startswith(dep + "."):  # a module importing its own package's __init__
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _flags(parser: argparse.ArgumentParser) -> dict:
    out = {}
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        d = a.default
        out["/".join(a.option_strings) or a.dest] = (
            d if isinstance(d, (str, int, float, bool, type(None), list, dict)) else repr(d)
        )
    return out


def test_every_subcommand_keeps_its_recorded_flags_and_defaults(monkeypatch):
    from introllm.cli import build_parser

    monkeypatch.delenv("INTROLLM_API_KEY", raising=False)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    now = {"introllm": _flags(parser), **{name: _flags(p) for name, p in sub.choices.items()}}
    recorded = json.loads((ROOT / "tests" / "data" / "cli-flags.json").read_text())
    for command, flags in recorded.items():
        assert command in now, f"introllm {command} is gone"
        missing = {f: v for f, v in flags.items() if f not in now[command]}
        changed = {f: (v, now[command][f]) for f, v in flags.items() if f in now[command] and now[command][f] != v}
        assert not missing and not changed, f"introllm {command}: missing {missing}, changed defaults {changed}"


@pytest.mark.parametrize(
    "command", ["serve", "train", "eval", "generate", "bench", "experiment", "complete", "compare", "plot"]
)
def test_every_help_renders(command, capsys):
    from introllm.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: introllm" in capsys.readouterr().out
