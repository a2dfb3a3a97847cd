#!/usr/bin/env bash
# One-command acceptance run of the vLLM backend on a GPU (issue 13), for a maintainer with one
# H100/H200: about 10 minutes. From the repository root:
#
#   scripts/gpu-check.sh              on a CUDA host: installs the CUDA extra, then runs the steps
#   scripts/gpu-check.sh --dry-run    the same steps on this CPU with the embedded model, smaller
#
# Steps (each logged to $OUT/<step>.log; a summary table at the end; exit 1 if any failed):
#   install   pip install -e '.[vllm,dev]' (dry run: checks that vllm imports)
#   unit      the vLLM backend's unit tests (processors V1 and V2, backend choice, KV sizing, Table 3 counting)
#   serve     `introllm serve` with no --backend: the first log line names the backend (GPU: vllm) and
#             the model runner (GPU: V2); the official openai client gets a completion with its trace
#   server    tests/test_vllm.py: the openai client against `introllm serve --backend vllm`
#   table3    introllm bench --contexts on the vLLM backend, learned vs default (GPU: Qwen3-1.7B shape,
#             random weights, 1k..24k; dry run: the embedded model, 1k and 2k)
#   torchrow  the same on the torch engine, one context
#   train     two `introllm train` steps in bfloat16 (GPU: on CUDA)
#   rollouts  three `introllm train` steps with colocated-vLLM rollouts (issue 14; float32, model lr
#             1e-4, compiled vLLM: CUDA graphs on a GPU): each step's log-prob gap between vLLM's
#             samples and the trainer's recompute must stay below 1e-3 on average (a skipped or
#             stale weight sync shows as 1e-1 and more)
#   rollbench introllm bench --train --rollout-backend vllm: rollout tok/s and whole-step time, vLLM
#             vs the torch engine, side by side (GPU: 16 prompts x 8 samples x 128 tokens; training in
#             float32, vLLM in ROLL_DTYPE, default bfloat16 as verl rolls out)
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), OUT (default gpu-check-<time>),
# ONLY (space-separated step names to run, e.g. ONLY="install rollouts rollbench"; default all).
set -uo pipefail

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^# ONLY/p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
INTROLLM=("$PY" -m introllm)

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; CONTEXTS=1k,2k; NEW=8; MODEL=(); EAGER=(--vllm-eager); TRAIN_TOKENS=8; ROLL_PROMPTS=2
  SERVE_ARGS=(--backend vllm --vllm-eager); EXPECT_BACKEND=vllm; EXPECT_RUNNER=V1
  SERVER_TESTS=(-k "not distribution and not trained")  # the trained-checkpoint tests train first: long on 2 cores
else
  DEVICE=cuda; CONTEXTS=1k,2k,4k,8k,16k,24k; NEW=128; MODEL=(--random-model qwen3-1.7b); EAGER=(); TRAIN_TOKENS=32; ROLL_PROMPTS=16
  SERVE_ARGS=(); EXPECT_BACKEND=vllm; EXPECT_RUNNER=V2
  SERVER_TESTS=()
fi

NAMES=(); RESULTS=(); SECONDS_TAKEN=(); NOTES=()
step() {  # step NAME COMMAND...: run, log, record (result "skip" when ONLY leaves it out)
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then
    NAMES+=("$name"); RESULTS+=(skip); SECONDS_TAKEN+=(0); NOTES+=(""); NOTE=; return 0
  fi
  local start=$SECONDS status=ok
  echo "== $name: $*"
  if ! "$@" >"$OUT/$name.log" 2>&1; then status=FAIL; tail -n 15 "$OUT/$name.log" | sed 's/^/   | /'; fi
  NAMES+=("$name"); RESULTS+=("$status"); SECONDS_TAKEN+=($((SECONDS - start))); NOTES+=("${NOTE:-}")
  NOTE=
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

unit() {
  "$PY" -m pytest -q -m "not slow" tests/test_vllm_hooks.py tests/test_vllm_hooks_v2.py tests/test_vllm_config.py \
    tests/test_vllm_context_bench.py
}

serve() {  # the default `introllm serve` on this host, one request through the official client
  local port log pid ok=1
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log="$OUT/serve-server.log"
  "${INTROLLM[@]}" serve --port "$port" "${SERVE_ARGS[@]}" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  "$PY" - "$port" <<'EOF' || ok=0
import sys, openai
client = openai.OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="unused", max_retries=0)
out = client.completions.create(model=client.models.list().data[0].id, prompt="The capital of France is", max_tokens=16)
trace = out.choices[0].model_extra["temperature_trace"]
print(repr(out.choices[0].text), "trace:", trace)
assert out.usage.completion_tokens == len(trace["temperatures"]) > 0
EOF
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  head -n 1 "$log"
  grep -m1 "model runner" "$log" || true
  head -n 1 "$log" | grep -q "backend: $EXPECT_BACKEND" || { echo "expected backend $EXPECT_BACKEND in the first log line"; ok=0; }
  grep -q "model runner $EXPECT_RUNNER" "$log" || { echo "expected model runner $EXPECT_RUNNER"; ok=0; }
  [ "$ok" = 1 ]
}

server() { "$PY" -m pytest -q tests/test_vllm.py "${SERVER_TESTS[@]}"; }

table3() {
  "${INTROLLM[@]}" bench "${MODEL[@]}" --contexts "$CONTEXTS" --backends vllm --new-tokens "$NEW" --repeats 2 \
    "${EAGER[@]}" --json "$OUT/table3-vllm.json"
}

torchrow() {
  "${INTROLLM[@]}" bench "${MODEL[@]}" --contexts 1k --backends torch --new-tokens 32 --repeats 2 --device "$DEVICE" \
    --json "$OUT/table3-torch.json"
}

train() {
  "${INTROLLM[@]}" train --steps 2 --batch-size 2 --group-size 4 --max-new-tokens "$TRAIN_TOKENS" --eval-size 0 \
    --dtype bfloat16 --device "$DEVICE" --save-every 0 --output "$OUT/train" --overwrite --no-progress
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

headline() {  # a one-line figure from a Table 3 JSON: learned and default tok/s and overhead per context
  "$PY" - "$1" <<'EOF' 2>/dev/null
import json, statistics, sys
res = json.load(open(sys.argv[1]))["results"][0]
parts = []
for r in res["rows"]:
    d, l = (statistics.median(r["tokens_per_s"][k]) for k in ("default", "learned"))
    parts.append(f"{r['context'] // 1024}k learned {l:.1f} / default {d:.1f} tok/s")
print(f"{res['backend']} {res['dtype']}" + (f" runner {res['runner']}" if res.get("runner") else "") + ": " + "; ".join(parts))
EOF
}

echo "gpu-check: $([ "$DRY" = 1 ] && echo "DRY RUN on $(uname -m) CPU, embedded model" || echo "GPU run"); logs in $OUT"
step install install
step unit unit
step serve serve
NOTE=$(grep -m1 -o "model runner V[12]" "$OUT/serve-server.log" 2>/dev/null)
NOTES[${#NOTES[@]}-1]="$(head -n 1 "$OUT/serve-server.log" 2>/dev/null | grep -o 'backend: [a-z]*') ${NOTE:-}"; NOTE=
step server server
NOTES[${#NOTES[@]}-1]=$(grep -E "passed|failed" "$OUT/server.log" 2>/dev/null | tail -n 1)
step table3 table3
NOTES[${#NOTES[@]}-1]=$(headline "$OUT/table3-vllm.json")
step torchrow torchrow
NOTES[${#NOTES[@]}-1]=$(headline "$OUT/table3-torch.json")
step train train
NOTES[${#NOTES[@]}-1]=$(grep -c '"step"' "$OUT/train/metrics.jsonl" 2>/dev/null | sed 's/$/ steps logged/')
step rollouts rollouts
NOTES[${#NOTES[@]}-1]=$(grep "^step 3:" "$OUT/rollouts.log" 2>/dev/null)
step rollbench rollbench
NOTES[${#NOTES[@]}-1]=$(grep -A1 "vLLM / torch" "$OUT/rollbench.log" 2>/dev/null | tr -s ' \n' ' ' | cut -c1-120)

echo
printf '%-9s %-5s %6s  %s\n' step result secs notes
failed=0
for i in "${!NAMES[@]}"; do
  printf '%-9s %-5s %6s  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_TAKEN[$i]}" "${NOTES[$i]}"
  [ "${RESULTS[$i]}" = ok ] || failed=1
done | tee "$OUT/summary.txt"
grep -q FAIL "$OUT/summary.txt" && exit 1
exit 0
