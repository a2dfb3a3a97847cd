#!/usr/bin/env bash
# GuideLLM (vLLM's recommended serving benchmark) against our server on both CPU backends and against
# llama.cpp's llama-server on the same GGUF, one server at a time, with the same synthetic prompts
# (64 prompt tokens, exactly 64 output tokens with ignore_eos, streamed /v1/completions, 1/16/64
# concurrent streams). Offline: the tokenizer is the embedded model's local copy. docs/benchmarks.md
# has the figures and how they compare with benchmarks/servers.py.
#
#   python3 -m venv /tmp/guidellm && /tmp/guidellm/bin/pip install guidellm==0.8.1     # once (PyPI)
#   GUIDELLM=/tmp/guidellm/bin/guidellm LLAMA_SERVER=/path/to/llama-server bash benchmarks/guidellm/run.sh
#
# Environment: GUIDELLM (the guidellm command), INTROLLM (the introllm command) [.venv/bin/introllm],
# LLAMA_SERVER (skipped when unset), SERVERS (which to run) [introllm-llamacpp introllm-torch
# llama-server], OUT [guidellm-results].
set -euo pipefail
cd "$(dirname "$0")/../.."
GUIDELLM=${GUIDELLM:?set GUIDELLM to the guidellm command (pip install guidellm)}
INTROLLM=${INTROLLM:-.venv/bin/introllm}
OUT=${OUT:-guidellm-results}
PY=$(dirname "$INTROLLM")/python
TOKENIZER=$("$PY" -c 'from introllm.sampler.models import default_checkpoint; print(default_checkpoint())')
GGUF=$("$PY" -c 'from introllm.sampler.models import embedded_gguf; print(embedded_gguf())')
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
declare -A CMD=(
  [introllm-llamacpp]="$INTROLLM serve --backend llamacpp --port 8101"
  [introllm-torch]="$INTROLLM serve --backend torch --port 8102"
  [llama-server]="${LLAMA_SERVER:-} -m $GGUF -np 64 -c 16384 -t $(nproc) --host 127.0.0.1 --port 8103"
)
declare -A PORT=([introllm-llamacpp]=8101 [introllm-torch]=8102 [llama-server]=8103)
for name in ${SERVERS:-introllm-llamacpp introllm-torch llama-server}; do
  if [ "$name" = llama-server ] && [ -z "${LLAMA_SERVER:-}" ]; then echo "$name: skipped, LLAMA_SERVER is not set"; continue; fi
  port=${PORT[$name]}; out=$OUT/$name; mkdir -p "$out"
  ${CMD[$name]} > "$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
  model=$(curl -s "http://127.0.0.1:$port/v1/models" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
  "$PY" - "$port" "$model" "$TOKENIZER" "$out/scenario.json" <<'PYEOF'
import json, sys
port, model, tokenizer, out = sys.argv[1:]
s = json.load(open("benchmarks/guidellm/scenario.json"))
s["spec"]["backend"].update(target=f"http://127.0.0.1:{port}", model=model)
s["spec"]["tokenizer"]["model"] = tokenizer
json.dump(s, open(out, "w"), indent=2)
PYEOF
  curl -s -o /dev/null "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\": \"$model\", \"prompt\": \"Warm up\", \"max_tokens\": 8}"
  "$GUIDELLM" run --scenario "$out/scenario.json" --output "kind=json,path=$out/benchmarks.json" \
    --output "kind=csv,path=$out/benchmarks.csv" --output kind=console --disable-console-interactive \
    | tee "$out/console.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
