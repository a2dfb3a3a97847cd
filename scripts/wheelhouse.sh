#!/usr/bin/env bash
# The wheelhouse for an air-gapped CUDA host (issue 29): run it on a connected machine, copy DIR to the
# host, run `scripts/gpu-check.sh --wheelhouse DIR` there (docs/gpu.md).
#
#   scripts/wheelhouse.sh [DIR]      (or: make wheelhouse; DIR defaults to wheelhouse/)
#
# What goes in DIR (its old wheels are removed first):
#   introllm-*.whl     this checkout, built with `pip wheel --no-deps .`
#   *.whl              what the torch-backend steps need (serve with the official openai client,
#                      bench --contexts --backends torch, train): pyproject's [project] dependencies less
#                      torch and $WITHOUT, plus openai and $EXTRA, with their dependencies, resolved for
#                      Linux x86_64 and CPython $PYTHON_VERSION: binary wheels for manylinux 2014/2_17/2_28
#                      or pure Python; a dependency PyPI has only as source is built into a wheel here
#   requirements.txt   those requirements, for `pip install --no-index --find-links DIR -r`
#   tokenizer/         the embedded model's tokenizer (3.5 MB): the GPU run's random Qwen3-1.7B-shaped
#                      model borrows it, so the host needs no model (the embedded model's own wheel,
#                      93 MB, is alone over the budget)
# Left out, because the host's image has torch (and a CUDA torch is gigabytes): torch and everything
# torch itself requires (nvidia-*, cuda-*, triton, sympy, filelock, jinja2, ...); vllm; $IMAGE_HAS.
#
# Installing on the host: the project's wheel with --no-deps, then -r requirements.txt. pyproject pins
# torch==2.13.0 (for the CPU machines); the image has its own torch, and installing introllm with its
# dependencies would make pip try to replace it (and fail, with --no-index). requirements.txt holds
# every dependency but torch, so pip keeps whatever the image already satisfies and takes the rest
# from DIR; torch is never considered.
#
# Prints each file with its size and the total; exit 1 (one line) when the total is over LIMIT_MB.
#
# Environment:
#   PYTHON_VERSION  the host's Python, major.minor [3.12]
#   PYTHON          the Python whose pip resolves, downloads and builds; it must be that version
#                   (environment markers and wheels built from source follow the running interpreter)
#                   [python$PYTHON_VERSION, else python3 when it is that version, else pyenv's]
#   PROJECT_PYTHON  a Python with this project and its embedded model installed, for the tokenizer
#                   [.venv/bin/python, as `make install` makes it]
#   WITHOUT         dependencies the GPU check does not use, left out of requirements.txt [reasoning-gym:
#                   only `introllm train --dataset rg:...` needs it, and it pulls matplotlib, pillow and
#                   fonttools, 34 MB; the check trains on a JSONL file]
#   IMAGE_HAS       distributions the host's image has, kept in requirements.txt but not downloaded
#                   [numpy: 16 MB, in every PyTorch image]
#   EXTRA           more requirements, space-separated (e.g. "pytest" when the host's image has vLLM)
#   LIMIT_MB        the budget in MB (10^6 bytes) [50]
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=${1:-wheelhouse}
PYV=${PYTHON_VERSION:-3.12}
LIMIT_MB=${LIMIT_MB:-50}
PROJECT_PY=${PROJECT_PYTHON:-.venv/bin/python}
WITHOUT=${WITHOUT-reasoning-gym}
IMAGE_HAS=${IMAGE_HAS-numpy}
ver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
if [ -z "${PYTHON:-}" ]; then
  for candidate in "python$PYV" python3 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$PYV".*/bin/python"$PYV"; do
    if [ "$(ver "$candidate")" = "$PYV" ]; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "${PYTHON:-}" ] || [ "$(ver "$PYTHON")" != "$PYV" ]; then
  echo "wheelhouse.sh: needs a Python $PYV to resolve for the host's Python $PYV; set PYTHON=/path/to/python$PYV (or PYTHON_VERSION)" >&2
  exit 1
fi
PIP=("$PYTHON" -m pip --disable-pip-version-check)
# --platform linux_x86_64 admits the wheels built here from source distributions
TARGET=(--only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux_2_28_x86_64 --platform linux_x86_64 --python-version "$PYV" --implementation cp
  --abi "cp${PYV/./}")

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
rm -rf "$DIR"/*.whl "$DIR/requirements.txt" "$DIR/tokenizer"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() {  # fail WHAT LOG: the log's last lines, then one line
  tail -n 5 "$2" >&2
  echo "wheelhouse.sh: $1 failed" >&2
  exit 1
}

# 1. requirements.txt: pyproject's dependencies less torch and $WITHOUT, plus openai (the check's
#    client) and $EXTRA
"$PYTHON" - "$DIR/requirements.txt" "${EXTRA:-}" "$WITHOUT" <<'EOF'
import re, sys

try:
    import tomllib
except ImportError:  # Python 3.10: pip's own copy
    from pip._vendor import tomli as tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
name = lambda req: re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
without = {"torch", *(w.lower().replace("_", "-") for w in sys.argv[3].split())}
reqs = [r for r in project["dependencies"] if name(r) not in without]
reqs += [r for r in project["optional-dependencies"]["dev"] if name(r) == "openai"]
reqs += sys.argv[2].split()
open(sys.argv[1], "w").write(
    "# introllm's dependencies less torch (the host's image has its own) and those the GPU check does not\n"
    "# use (scripts/wheelhouse.sh): pip install --no-index --find-links DIR -r DIR/requirements.txt\n"
    + "\n".join(reqs) + "\n"
)
EOF

# 2. resolve (metadata only: PyPI serves it apart from the wheels), torch included, so that versions
#    agree with what torch needs
echo "resolving for CPython $PYV on Linux x86_64 with $PYTHON ($("${PIP[@]}" --version | cut -d' ' -f1-2))"
echo torch >"$WORK/torch.txt"
"${PIP[@]}" install --quiet --dry-run --ignore-installed --report "$WORK/all.json" -r "$DIR/requirements.txt" \
  -r "$WORK/torch.txt" >"$WORK/resolve.log" 2>&1 || fail resolution "$WORK/resolve.log"

# 3. the closure of requirements.txt, less torch's own closure, vllm and $IMAGE_HAS; source-only
#    members are marked
"$PYTHON" - "$WORK/all.json" "$DIR/requirements.txt" "$IMAGE_HAS" >"$WORK/pins" <<'EOF'
import json, re, sys

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a bare interpreter: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

report = json.load(open(sys.argv[1]))
env = report["environment"]  # the markers pip evaluated: the running interpreter's
items = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}


def closure(roots: list[str], stop: set[str]) -> set[str]:
    todo, seen = [Requirement(r) for r in roots], set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in stop or (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        for dep in map(Requirement, items[name]["metadata"].get("requires_dist") or []):
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in {"", *req.extras}):
                todo.append(dep)
    return {name for name, _ in seen}


image = closure(["torch"], set()) | {canonicalize_name(n) for n in sys.argv[3].split()}
image |= {n for n in items if re.match(r"^(vllm.*|triton|nvidia-.*|cuda-.*)$", n)}
roots = [l.strip() for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")]
for name in sorted(closure(roots, image)):
    item = items[name]
    kind = "wheel" if item["download_info"]["url"].endswith(".whl") else "sdist"
    print(kind, f"{item['metadata']['name']}=={item['metadata']['version']}")
EOF

# 4. source-only dependencies built into wheels here (pure Python ones are py3-none-any; compiled
#    ones linux_x86_64, for this machine's glibc), then the wheels for the target
if grep -q '^sdist ' "$WORK/pins"; then
  echo "building wheels from source distributions: $(grep '^sdist ' "$WORK/pins" | cut -d' ' -f2 | tr '\n' ' ')"
  grep '^sdist ' "$WORK/pins" | cut -d' ' -f2 | xargs "${PIP[@]}" wheel --quiet --no-deps -w "$DIR" \
    >"$WORK/build.log" 2>&1 || fail "building wheels from source" "$WORK/build.log"
fi
echo "downloading $(grep -c '^wheel ' "$WORK/pins") wheels"
cut -d' ' -f2 "$WORK/pins" | xargs "${PIP[@]}" download --quiet --no-deps "${TARGET[@]}" --find-links "$DIR" \
  -d "$DIR" >"$WORK/download.log" 2>&1 || fail download "$WORK/download.log"

# 5. this checkout's wheel, and the embedded model's tokenizer
"${PIP[@]}" wheel --quiet --no-deps -w "$DIR" . >"$WORK/project.log" 2>&1 || fail "building introllm's wheel" "$WORK/project.log"
"$PROJECT_PY" - "$DIR/tokenizer" >"$WORK/tokenizer.log" 2>&1 <<'EOF' ||
import shutil, sys
from pathlib import Path

from introllm.sampler.models import default_checkpoint

source, target = default_checkpoint(), Path(sys.argv[1])
target.mkdir()
for f in source.iterdir():  # the config and the tokenizer; not the weights, not the head
    if f.is_file() and f.suffix != ".safetensors" and not f.name.startswith("temperature_head"):
        shutil.copy(f, target / f.name)
EOF
  fail "copying the tokenizer with $PROJECT_PY (it needs introllm and its embedded model: make install)" "$WORK/tokenizer.log"

# 6. sizes and the budget
"$PYTHON" - "$DIR" "$LIMIT_MB" <<'EOF'
import sys
from pathlib import Path

root, limit = Path(sys.argv[1]), float(sys.argv[2])
sizes = {f.name: f.stat().st_size for f in root.glob("*.whl")}
sizes["tokenizer/"] = sum(f.stat().st_size for f in (root / "tokenizer").iterdir())
for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
    print(f"{size / 1e6:8.2f} MB  {name}")
total = sum(sizes.values()) / 1e6
print(f"{total:8.2f} MB  total: {len(sizes) - 1} wheels and the tokenizer in {root} (budget {limit:g} MB)")
if total > limit:
    print(f"wheelhouse.sh: {total:.1f} MB is over the {limit:g} MB budget; leave out what the host's image has with IMAGE_HAS=...")
    sys.exit(1)
EOF
