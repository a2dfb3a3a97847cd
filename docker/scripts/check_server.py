"""Check a running IntroLLM server the way a user would, with the official openai SDK: a completion
and a chat completion, each choice carrying ``temperature_trace`` with one entry per generated token
(temperatures in the served head's range, read from ``/ui/config``: [0.1, 1.5] for the embedded
model's default head, the paper's [0.6, 1.5] where the page is off; boolean update flags). With
--api-key, also that a request without the key gets 401.

    python docker/scripts/check_server.py http://127.0.0.1:8000 [--api-key KEY] [--model ID] [--wait 180]

Prints one line per check and exits 1 with a message on the first failure. Used by
docker/scripts/test-containers.sh (against the containers) and tests/test_docker.py (against
install.sh + start.sh run outside Docker).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

import openai

TAU_RANGE = [0.6, 1.5]
"""The served head's [tau_min, tau_max] (``head_range`` replaces the paper's default)."""


def head_range(url: str) -> list[float]:
    """[tau_min, tau_max] of the served head, from the playground's /ui/config (open without the key);
    the paper's [0.6, 1.5] when the server runs with --no-ui."""
    try:
        with urllib.request.urlopen(url + "/ui/config", timeout=10) as r:
            cfg = json.load(r)
        return [cfg["tau_min"], cfg["tau_max"]]
    except Exception:
        return [0.6, 1.5]


def wait_healthy(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except Exception as e:  # refused while starting, 503 while loading
            if time.monotonic() > deadline:
                raise SystemExit(f"FAIL: {url}/health not 200 after {seconds:.0f} s: {e}") from None
        time.sleep(1)


def check_trace(what: str, trace: dict | None, num_tokens: int) -> None:
    if trace is None:
        raise SystemExit(f"FAIL: {what}: the choice has no temperature_trace")
    lengths = {k: len(trace[k]) for k in ("token_ids", "tokens", "temperatures", "updated")}
    if set(lengths.values()) != {num_tokens}:
        raise SystemExit(f"FAIL: {what}: trace lengths {lengths}, expected {num_tokens} (completion_tokens)")
    lo, hi = TAU_RANGE
    if not all(lo - 1e-6 <= t <= hi + 1e-6 for t in trace["temperatures"]):
        raise SystemExit(f"FAIL: {what}: temperatures outside [{lo}, {hi}]: {trace['temperatures']}")
    if not all(isinstance(u, bool) for u in trace["updated"]):
        raise SystemExit(f"FAIL: {what}: update flags are not booleans: {trace['updated']}")
    print(
        f"ok   {what}: {num_tokens} tokens, tau {min(trace['temperatures']):.2f}..{max(trace['temperatures']):.2f}, "
        f"{sum(trace['updated'])} updates"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="server root, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="the server's bearer key, if it has one")
    parser.add_argument("--wait", type=float, default=180, help="seconds to wait for /health [180]")
    parser.add_argument("--model", help="the model id the server must list [any]")
    args = parser.parse_args()
    url = args.url.rstrip("/")

    wait_healthy(url, args.wait)
    print(f"ok   {url}/health answers 200")
    TAU_RANGE[:] = head_range(url)
    client = openai.OpenAI(base_url=url + "/v1", api_key=args.api_key or "unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    if args.model and model != args.model:
        raise SystemExit(f"FAIL: the server lists the model {model!r}, expected {args.model!r}")
    print(f"ok   /v1/models lists {model!r}")

    r = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=12, extra_body={"ignore_eos": True}
    )
    check_trace("completion", getattr(r.choices[0], "temperature_trace", None), r.usage.completion_tokens)
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12)
    check_trace("chat completion", getattr(r.choices[0], "temperature_trace", None), r.usage.completion_tokens)

    if args.api_key:
        wrong = openai.OpenAI(base_url=url + "/v1", api_key="wrong-key", max_retries=0)
        try:
            wrong.models.list()
        except openai.AuthenticationError:
            print("ok   a wrong API key gets 401")
        else:
            raise SystemExit("FAIL: a request with a wrong API key was answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
