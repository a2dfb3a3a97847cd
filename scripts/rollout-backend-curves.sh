#!/usr/bin/env bash
# Issue 14: same seeds, same problems, 20 steps of `introllm train` with torch rollouts and with
# colocated-vLLM rollouts; prints per-step reward, held-out accuracy and the vLLM logp gap side
# by side. Usage: scripts/rollout-backend-curves.sh [OUT_DIR] [SEEDS...]  (default runs/, seeds 0 1)
# On a 2-core CPU one run takes ~20-60 min; on a GPU add --device cuda --dtype bfloat16 via EXTRA.
set -euo pipefail
out=${1:-runs}; shift || true
seeds=${*:-0 1}
introllm=${INTROLLM:-introllm}
for seed in $seeds; do
  for backend in torch vllm; do
    $introllm train --rollout-backend "$backend" --seed "$seed" --steps 20 --eval-every 5 --save-every 0 \
      --output "$out/curves-$backend-seed$seed" --overwrite --no-progress ${EXTRA:-}
  done
done
python - "$out" $seeds <<'PY'
import json, sys
out, seeds = sys.argv[1], sys.argv[2:]
def rows(backend, seed):
    return [json.loads(l) for l in open(f"{out}/curves-{backend}-seed{seed}/metrics.jsonl")]
for seed in seeds:
    t, v = rows("torch", seed), rows("vllm", seed)
    print(f"seed {seed}: step  reward torch/vllm   eval torch/vllm   vllm logp gap max/mean/frac>1e-3")
    for a, b in zip(t, v):
        if "reward" not in a:
            print(f"  {a['step']:>4}  {'':>18}  {a.get('eval_accuracy', float('nan')):.3f}/{b.get('eval_accuracy', float('nan')):.3f}")
            continue
        ev = f"{a['eval_accuracy']:.3f}/{b['eval_accuracy']:.3f}" if "eval_accuracy" in a else ""
        print(f"  {a['step']:>4}  {a['reward']:.3f}/{b['reward']:.3f}  {ev:>15}   "
              f"{b['logp_mismatch']:.1e}/{b['logp_mismatch_mean']:.1e}/{b['logp_mismatch_frac']:.3f}")
    mean = lambda xs: sum(xs) / len(xs)
    print(f"  mean reward torch {mean([r['reward'] for r in t if 'reward' in r]):.3f}, "
          f"vllm {mean([r['reward'] for r in v if 'reward' in r]):.3f}")
PY
