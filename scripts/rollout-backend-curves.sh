#!/usr/bin/env bash
# Issue 14: same seeds, same problems, 20 steps of `introllm train` with torch rollouts and with
# colocated-vLLM rollouts; prints per-step reward, held-out accuracy and the vLLM logp gap side
# by side, with each run's wall time.
#
#   scripts/rollout-backend-curves.sh [OUT_DIR] [SEEDS...]      (default runs/, seeds 0 1)
#
# EXTRA adds `introllm train` flags to every run. What docs/training.md reports (~10 min a run on
# 2 CPU cores):
#   EXTRA="--dataset experiments/data/arithmetic-train.jsonl --batch-size 4 --group-size 8 \
#     --max-new-tokens 48 --eval-size 32 --model-lr 1e-5 --head-lr 5e-4" scripts/rollout-backend-curves.sh
# On a GPU add --device cuda --dtype bfloat16. BACKENDS="vllm" runs only the vLLM side (e.g. with
# EXTRA="... --vllm-dtype bfloat16"; link the torch runs of the same seeds into OUT_DIR first).
set -euo pipefail
out=${1:-runs}; shift || true
seeds=${*:-0 1}
introllm=${INTROLLM:-introllm}
for seed in $seeds; do
  for backend in ${BACKENDS:-torch vllm}; do
    start=$SECONDS
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    $introllm train --rollout-backend "$backend" --seed "$seed" --steps 20 --eval-every 5 --save-every 0 \
      --output "$out/curves-$backend-seed$seed" --overwrite --no-progress ${EXTRA:-}
    echo "curves: $backend seed $seed took $((SECONDS - start)) s" >&2
  done
done
python - "$out" $seeds <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
def rows(backend, seed):
    return [json.loads(l) for l in open(f"{out}/curves-{backend}-seed{seed}/metrics.jsonl")]
def steps(rs):
    return [r for r in rs if "reward" in r]
mean_reward = {}
for seed in seeds:
    t, v = rows("torch", seed), rows("vllm", seed)
    print(f"seed {seed}: step  reward torch/vllm   eval torch/vllm   vllm logp gap max/mean/frac>1e-3")
    for a, b in zip(t, v):
        ev = f"{a['eval_accuracy']:.3f}/{b['eval_accuracy']:.3f}" if "eval_accuracy" in a else ""
        if "reward" not in a:
            print(f"  {a['step']:>4}  {'':>11}  {ev:>15}")
            continue
        print(f"  {a['step']:>4}  {a['reward']:.3f}/{b['reward']:.3f}  {ev:>15}   "
              f"{b['logp_mismatch']:.1e}/{b['logp_mismatch_mean']:.1e}/{b['logp_mismatch_frac']:.3f}")
    for backend, rs in (("torch", t), ("vllm", v)):
        mean_reward[backend, seed] = statistics.mean(r["reward"] for r in steps(rs))
    evals = lambda rs: [r["eval_accuracy"] for r in rs if "eval_accuracy" in r]
    print(f"  mean reward torch {mean_reward['torch', seed]:.3f}, vllm {mean_reward['vllm', seed]:.3f}; "
          f"final eval torch {evals(t)[-1]:.3f}, vllm {evals(v)[-1]:.3f}; median step s torch "
          f"{statistics.median(r['step_seconds'] for r in steps(t)):.1f}, "
          f"vllm {statistics.median(r['step_seconds'] for r in steps(v)):.1f}; "
          f"logp gap max over steps {max(r['logp_mismatch'] for r in steps(v)):.1e}")
# noise yardstick: how far the same backend's mean reward moves between seeds
for backend in ("torch", "vllm"):
    values = [mean_reward[backend, seed] for seed in seeds]
    print(f"{backend}: mean reward by seed {', '.join(f'{x:.3f}' for x in values)}; "
          f"spread over seeds {max(values) - min(values):.3f}")
print("vllm - torch mean reward by seed: "
      + ", ".join(f"{mean_reward['vllm', s] - mean_reward['torch', s]:+.3f}" for s in seeds))
PY
