#!/usr/bin/env bash
# Build and run the IntroLLM containers with podman, on a machine without a Docker engine or an image
# registry (this project's machines), and check them for real:
#   tools       podman, runc, debootstrap (apt) and podman-compose (pip, in a venv of its own)
#   images      localhost/debian-py:bookworm from debootstrap (Python 3.11 with its headers, as in
#               python:3.11-slim-bookworm) and localhost/prometheus-debian:bookworm
#               from Debian's prometheus package (each skipped when it exists)
#   build       the CPU image, built by podman-compose from docker/compose.yaml + compose.local.yaml,
#               with pip's settings, CA bundle and local wheel directories mounted into the build
#   offline     the container with no network at all until its HEALTHCHECK passes
#   server      the container with a published port and an API key, checked with the openai SDK
#   compose     the compose stack up; Prometheus scrapes the server; then down
#   checkpoint  a checkpoint directory of the host mounted through INTROLLM_CHECKPOINT_DIR: refused
#               with a message while its files are 0600 (safetensors creates files so; introllm
#               makes its own readable, other writers may not), served once
#               readable, under INTROLLM_MODEL_NAME
# Exits non-zero with a message at the first failure and removes its containers in any case.
#
#   docker/scripts/test-containers.sh          as root, from anywhere
#
#   SERVER_PORT, PROMETHEUS_PORT   host ports used by the test [18000, 19090]
#   PYTHON      a Python with the openai SDK [the repository's .venv/bin/python]
#   CACHE_DIR   podman-compose's venv and the debootstrap scratch [/var/tmp/introllm-podman]
#   REBUILD=1   rebuild the base and Prometheus images too
#   BUILD_MOUNTS  host paths mounted read-only into the build at the same place [pip's settings here]
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
SERVER_PORT=${SERVER_PORT:-18000}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
PYTHON=${PYTHON:-$repo/.venv/bin/python}
CACHE_DIR=${CACHE_DIR:-/var/tmp/introllm-podman}
BASE_IMAGE=localhost/debian-py:bookworm
PROMETHEUS_IMAGE=localhost/prometheus-debian:bookworm
SERVER_IMAGE=localhost/introllm:cpu
PROJECT=introllm-test
API_KEY=test-key-$$
# pip's configuration on this machine (`pip config list`): config files, CA bundle, local wheel
# directory and indexes. The build sees them read-only at the same paths.
BUILD_MOUNTS=${BUILD_MOUNTS:-/etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip /root/.config/pip /opt/wheels /opt/pypi /opt/pypi-more}

# ------------------------------------------------------------------ helpers

start=$SECONDS
phase_start=$SECONDS
phase_name=""
timings=()
phase() {  # phase NAME: close the previous phase (recording its time), open the next
    if [[ -n $phase_name ]]; then
        timings+=("$(printf '%-10s %4d s' "$phase_name" $((SECONDS - phase_start)))")
        echo "== $phase_name: $((SECONDS - phase_start)) s"
    fi
    phase_name=$1
    phase_start=$SECONDS
    [[ $1 == done ]] || echo "== $1"
}
fail() { echo "FAIL [$phase_name]: $*" >&2; exit 1; }

compose_up=0
cleanup() {
    local rc=$?
    if ((rc != 0)); then
        for c in $PROJECT-offline $PROJECT-server $(podman ps --all --format '{{.Names}}' \
                --filter label=com.docker.compose.project=$PROJECT 2>/dev/null); do
            if podman container exists "$c" 2>/dev/null; then
                echo "--- last log lines of $c:" >&2
                podman logs --tail 25 "$c" >&2 || true
            fi
        done
    fi
    podman rm --force --ignore $PROJECT-offline $PROJECT-server >/dev/null 2>&1 || true
    if ((compose_up)); then compose down --volumes >/dev/null 2>&1 || true; fi
    if ((rc != 0)); then echo "FAILED after $((SECONDS - start)) s (phase: $phase_name)" >&2; fi
}
trap cleanup EXIT

# podman as DESIGN.md describes it for these machines: runc, cgroupfs, no ulimits to inherit.
mkdir -p "$CACHE_DIR"
cat > "$CACHE_DIR/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
EOF
export CONTAINERS_CONF=$CACHE_DIR/containers.conf

compose() {
    INTROLLM_HOST_PORT=$SERVER_PORT PROMETHEUS_HOST_PORT=$PROMETHEUS_PORT \
        "$CACHE_DIR/venv/bin/podman-compose" --project-name $PROJECT \
        -f docker/compose.yaml -f docker/compose.local.yaml "$@"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 2 s until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "$what: not within the time limit"
        sleep 2
    done
}

# podman schedules periodic health checks through systemd, which these machines do not run; the
# tests run the checks themselves (podman healthcheck run), so its complaints are noise.
no_systemd_noise() { grep -v 'unable to get systemd connection' >&2 || true; }

http_ok() { "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1"; }

# ------------------------------------------------------------------ tools

phase tools
missing=()
for tool in podman runc debootstrap; do command -v $tool >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null \
        || fail "apt-get install podman runc debootstrap"
fi
if [[ ! -x $CACHE_DIR/venv/bin/podman-compose ]]; then
    python3 -m venv "$CACHE_DIR/venv" && "$CACHE_DIR/venv/bin/pip" install -q podman-compose==1.6.0 \
        || fail "pip install podman-compose"
fi
[[ -x $PYTHON ]] && "$PYTHON" -c "import openai" || fail "$PYTHON has no openai SDK (make install, or set PYTHON)"
podman --version

# ------------------------------------------------------------------ images

phase images
if [[ ${REBUILD:-0} == 1 ]]; then podman rmi --force --ignore $BASE_IMAGE $PROMETHEUS_IMAGE >/dev/null; fi
if ! podman image exists $BASE_IMAGE; then
    rootfs=$CACHE_DIR/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,ca-certificates bookworm "$rootfs" \
        >"$CACHE_DIR/debootstrap.log" 2>&1 || fail "debootstrap (see $CACHE_DIR/debootstrap.log)"
    tar -C "$rootfs" -c . | podman import --quiet - $BASE_IMAGE >/dev/null || fail "podman import"
    rm -rf "$rootfs"
fi
if ! podman image exists $PROMETHEUS_IMAGE; then
    podman build --quiet --format docker --build-arg BASE_IMAGE=$BASE_IMAGE -t $PROMETHEUS_IMAGE \
        -f docker/local/Dockerfile.prometheus docker/local >/dev/null || fail "building $PROMETHEUS_IMAGE"
fi

# ------------------------------------------------------------------ build

phase build
mounts=()
for path in $BUILD_MOUNTS; do
    if [[ -e $path ]]; then mounts+=("-v $path:$path:ro"); fi
done
# --format docker keeps the HEALTHCHECK (the OCI format has none). Layers are cached between runs.
compose --podman-build-args "--format docker ${mounts[*]}" build introllm >"$CACHE_DIR/build.log" 2>&1 \
    || { tail -30 "$CACHE_DIR/build.log" >&2; fail "building the server image (log: $CACHE_DIR/build.log)"; }
podman image exists $SERVER_IMAGE || fail "compose built no $SERVER_IMAGE"
user=$(podman image inspect --format '{{.Config.User}}' $SERVER_IMAGE)
[[ -n $user && $user != root && $user != 0 ]] || fail "the image runs as root (USER '$user')"
[[ $(podman image inspect --format '{{.Config.Healthcheck}}' $SERVER_IMAGE) == *healthcheck.py* ]] \
    || fail "the image has no HEALTHCHECK"
echo "image $SERVER_IMAGE: $(podman image inspect --format '{{.Size}}' $SERVER_IMAGE | numfmt --to=iec) bytes, user $user"

# ------------------------------------------------------------------ offline

phase offline
podman run --detach --name $PROJECT-offline --network none $SERVER_IMAGE 2>&1 >/dev/null | no_systemd_noise
wait_for 240 "the offline container's HEALTHCHECK" podman healthcheck run $PROJECT-offline
echo "healthy with no network ($(podman inspect --format '{{.State.Health.Status}}' $PROJECT-offline))"
podman rm --force $PROJECT-offline 2>&1 >/dev/null | no_systemd_noise

# ------------------------------------------------------------------ server

phase server
podman run --detach --name $PROJECT-server -p 127.0.0.1:$SERVER_PORT:8000 -e INTROLLM_API_KEY=$API_KEY \
    $SERVER_IMAGE 2>&1 >/dev/null | no_systemd_noise
"$PYTHON" docker/scripts/check_server.py http://127.0.0.1:$SERVER_PORT --api-key $API_KEY --wait 240 \
    || fail "the containerised server did not pass check_server.py"
podman rm --force $PROJECT-server 2>&1 >/dev/null | no_systemd_noise

# ------------------------------------------------------------------ compose

phase compose
compose_up=1
compose up --detach >"$CACHE_DIR/compose-up.log" 2>&1 \
    || { cat "$CACHE_DIR/compose-up.log" >&2; fail "podman-compose up"; }
"$PYTHON" docker/scripts/check_server.py http://127.0.0.1:$SERVER_PORT --wait 240 \
    || fail "the compose server did not pass check_server.py"
prom=http://127.0.0.1:$PROMETHEUS_PORT
wait_for 60 "Prometheus at $prom" http_ok $prom/-/ready
# The target is up, and a scrape after the checks above has counted their tokens.
"$PYTHON" - "$prom" <<'EOF' || fail "Prometheus did not scrape the server"
import json, sys, time, urllib.parse, urllib.request

prom = sys.argv[1]
def get(path):
    with urllib.request.urlopen(prom + path, timeout=5) as r:
        return json.load(r)["data"]

deadline = time.monotonic() + 60
while True:
    targets = [t for t in get("/api/v1/targets")["activeTargets"] if t["labels"]["job"] == "introllm"]
    result = get("/api/v1/query?" + urllib.parse.urlencode({"query": "introllm_generation_tokens_total"}))["result"]
    tokens = float(result[0]["value"][1]) if result else 0.0
    if targets and targets[0]["health"] == "up" and tokens > 0:
        print(f"ok   Prometheus target {targets[0]['scrapeUrl']} is up; introllm_generation_tokens_total = {tokens:.0f}")
        break
    if time.monotonic() > deadline:
        sys.exit(f"targets: {targets}\nquery result: {result}")
    time.sleep(2)
EOF
compose down --volumes >/dev/null 2>&1 || fail "podman-compose down"
compose_up=0

# ------------------------------------------------------------------ checkpoint

phase checkpoint
# A stand-in for a checkpoint that `introllm train` wrote on the host: the image's own, copied out.
checkpoint=$CACHE_DIR/checkpoint-test/my-model
rm -rf "$CACHE_DIR/checkpoint-test" && mkdir -p "$CACHE_DIR/checkpoint-test"
podman run --rm --user root --entrypoint cp -v "$CACHE_DIR/checkpoint-test:/out" $SERVER_IMAGE \
    -r /opt/introllm/cache/smollm2-135m-instruct /out/my-model 2>&1 | no_systemd_noise
chmod 600 "$checkpoint"/*.safetensors
if out=$(podman run --rm -v "$checkpoint:/checkpoint:ro" -e INTROLLM_CHECKPOINT=/checkpoint $SERVER_IMAGE 2>&1 \
    | grep -v 'unable to get systemd connection'); then
    fail "the server started on a checkpoint it cannot read"
fi
[[ $out == *"not readable by uid"* ]] || fail "no clear message for an unreadable checkpoint: $out"
echo "ok   an unreadable checkpoint is refused: ${out##*start.sh: }"
chmod -R a+rX "$checkpoint"
compose_up=1
INTROLLM_CHECKPOINT_DIR=$checkpoint INTROLLM_MODEL_NAME=my-model compose up --detach introllm \
    >"$CACHE_DIR/compose-up.log" 2>&1 || { cat "$CACHE_DIR/compose-up.log" >&2; fail "podman-compose up"; }
"$PYTHON" docker/scripts/check_server.py http://127.0.0.1:$SERVER_PORT --model my-model --wait 240 \
    || fail "the compose server did not serve the mounted checkpoint"
server=$(podman ps --format '{{.Names}}' --filter label=com.docker.compose.project=$PROJECT \
    --filter label=com.docker.compose.service=introllm)
podman logs "$server" 2>&1 | grep "loading /checkpoint" >/dev/null || fail "the server did not load /checkpoint"
echo "ok   it loaded /checkpoint"
compose down --volumes >/dev/null 2>&1 || fail "podman-compose down"
compose_up=0
rm -rf "$CACHE_DIR/checkpoint-test"

phase done
echo "== timings"
printf '   %s\n' "${timings[@]}"
echo "   total      $((SECONDS - start)) s"
echo "PASS: container tests"
