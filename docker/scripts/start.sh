#!/usr/bin/env bash
# Start `introllm serve` in the foreground, configured from the environment. `exec` makes the server
# the container's main process, so it receives `docker stop`'s SIGTERM. Arguments are passed on to
# `introllm serve` after the ones below (so they win): start.sh --max-batch 8
#
#   INTROLLM_VENV        the installation to run                      [/opt/introllm/venv]
#   INTROLLM_HOST        interface to listen on                       [0.0.0.0: all, as a container needs]
#   INTROLLM_PORT        port                                         [8000]
#   INTROLLM_CHECKPOINT  checkpoint directory                         [the embedded SmolLM2-135M-Instruct]
#   INTROLLM_MODEL_NAME  the model id clients send                    [the checkpoint directory's name]
#   INTROLLM_BACKEND     torch or vllm                                [introllm serve's default]
#   INTROLLM_API_KEY     bearer key required on /v1/*, /metrics and /openapi.json (read by introllm
#                        serve itself; empty: none)
#   INTROLLM_PUBLIC_METRICS  true: /metrics without the key, for a Prometheus that cannot send it [false]
set -euo pipefail

venv=${INTROLLM_VENV:-/opt/introllm/venv}
if [[ -n ${INTROLLM_CHECKPOINT:-} ]]; then
    # A mounted checkpoint belongs to a user of the host; safetensors alone creates files 0600.
    if [[ ! -d $INTROLLM_CHECKPOINT ]]; then
        echo "start.sh: INTROLLM_CHECKPOINT=$INTROLLM_CHECKPOINT is not a directory" >&2
        exit 1
    fi
    unreadable=$(find "$INTROLLM_CHECKPOINT" ! -readable -print -quit)
    if [[ -n $unreadable ]]; then
        echo "start.sh: $unreadable is not readable by uid $(id -u); on the host: chmod -R a+rX the checkpoint" >&2
        exit 1
    fi
fi
args=(serve --host "${INTROLLM_HOST:-0.0.0.0}" --port "${INTROLLM_PORT:-8000}")
if [[ -n ${INTROLLM_CHECKPOINT:-} ]]; then args+=(--checkpoint "$INTROLLM_CHECKPOINT"); fi
if [[ -n ${INTROLLM_MODEL_NAME:-} ]]; then args+=(--model-name "$INTROLLM_MODEL_NAME"); fi
if [[ -n ${INTROLLM_BACKEND:-} ]]; then args+=(--backend "$INTROLLM_BACKEND"); fi
if [[ ${INTROLLM_PUBLIC_METRICS:-false} == true ]]; then args+=(--public-metrics); fi
exec "$venv/bin/introllm" "${args[@]}" "$@"
