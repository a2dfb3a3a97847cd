"""A peer-written fuzzer (schemathesis) against the server's own OpenAPI document, on the
embedded model: every operation gets generated requests, valid and invalid, and every response
must be documented (status code, content type, body schema) and none may be a 5xx. Bounded: the
server caps max_tokens at 4 and n at 2 (the document says so, so valid requests stay cheap), and
each operation gets a fixed number of examples. Invalid requests must be refused
(``negative_data_rejection``: ``"echo": 0``, NaN, an out-of-range integer), and schemathesis' own
coverage phase (its CLI) sends every boundary value and every undeclared method (405 with
``Allow``). Afterwards the server still answers.

Not checked: that every schema-valid request is accepted (``positive_data_acceptance``). The
document states the rules across fields that JSON Schema can (best_of equal to n, top_logprobs
needing logprobs, temperature or policy, a message with content), but two it can only describe:
a policy's arguments (``fixed:0.7``) and max_tokens equal to max_completion_tokens when both come."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import schemathesis
from conftest import live_server
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from introllm.server.config import ServerConfig

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
EXAMPLES = 50  # per operation and kind (valid, invalid, valid streamed): about a minute on 2 busy CPU cores
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_url(embedded):
    config = ServerConfig(max_tokens=4, max_n=2, max_batch=8, default_max_tokens=4)
    with live_server(config, checkpoint=embedded) as url:
        yield url


def _streaming(case):
    if isinstance(case.body, dict):
        case.body["stream"] = True
    return case


def _fuzz(operation, mode: GenerationMode, stream: bool = False) -> tuple[list[int], list[str]]:
    """Run EXAMPLES generated cases of one operation (``stream``: each with ``"stream": true``);
    (statuses seen, failures found). Failures are collected rather than raised, so hypothesis
    does not spend minutes shrinking them."""
    statuses, failures = [], []
    strategy = operation.as_strategy(generation_mode=mode)

    @given(case=strategy.map(_streaming) if stream else strategy)
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def run(case):
        try:
            statuses.append(case.call_and_validate(checks=CHECKS).status_code)
        except Exception as e:  # a check failed (schemathesis raises a FailureGroup), or the call did
            failures.append(f"{operation.label} {mode.value}: {type(e).__name__}: {e}\n  {case.as_curl_command()}")

    run()
    return statuses, failures


def test_every_response_is_documented_and_none_is_a_server_error(fuzz_url):
    api = schemathesis.openapi.from_url(fuzz_url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /v1/completions",
        "POST /v1/chat/completions",
        "GET /v1/models",
        "GET /health",
    }
    statuses, failures = [], []
    for operation in operations:
        # a GET without parameters has no invalid form: only valid requests there
        post = operation.method.upper() == "POST"
        for mode, stream in [(GenerationMode.POSITIVE, False)] + (
            [(GenerationMode.NEGATIVE, False), (GenerationMode.POSITIVE, True)] if post else []
        ):
            seen, failed = _fuzz(operation, mode, stream)
            statuses += seen
            failures += failed
    assert not failures, f"{len(failures)} of {len(statuses) + len(failures)} responses failed:\n" + "\n".join(
        failures[:10]
    )
    assert not [s for s in statuses if s >= 500]
    assert 200 in statuses and 400 in statuses  # valid requests were generated and served, invalid ones refused


def test_the_coverage_phase_finds_nothing(fuzz_url):
    """schemathesis' CLI coverage phase: boundary values of every field, missing and wrong-typed
    fields, undeclared methods (405 with ``Allow``), with every check but positive_data_acceptance."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from schemathesis.cli import schemathesis; schemathesis()",
            "run",
            fuzz_url + "/openapi.json",
            "--phases",
            "coverage",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and "No issues found" in run.stdout, run.stdout[-6000:] + run.stderr[-2000:]


def test_the_document_states_this_servers_limits(fuzz_url):
    doc = httpx.get(fuzz_url + "/openapi.json").json()
    props = doc["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"enum": [MODEL]}.items() <= props["model"].items()
    assert any(b.get("maximum") == 4 for b in props["max_tokens"]["anyOf"])
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "404", "429", "500", "503"} <= set(chat) and "422" not in chat
    assert "temperature_trace" in doc["components"]["schemas"]["ChatChoice"]["properties"]


def test_the_server_still_serves_after_the_fuzzer(fuzz_url):
    # runs after the fuzz test (file order): the model still answers, nothing is left running
    r = httpx.post(
        fuzz_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    assert httpx.get(fuzz_url + "/health").json()["status"] == "ok"
