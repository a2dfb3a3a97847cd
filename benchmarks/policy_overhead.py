"""What the learned temperature costs a single stream, measured inside one server.

    python benchmarks/policy_overhead.py                      # --backend llamacpp, 40 pairs
    python benchmarks/policy_overhead.py --backend torch --pairs 20
    python benchmarks/policy_overhead.py --url http://127.0.0.1:8000   # a server already running

Servers measured one after another (``benchmarks/servers.py``) see this machine's speed drift
between them by more than the head costs (two one-round runs an hour apart differed by 11 %). Here
one server answers both: streamed completions of ``--tokens`` tokens, one client, alternating
between the learned policy (the server's default) and a fixed tau (``"temperature": 1.0``), in
A B, B A order. Each pair's ratio of time per output token (after the first, so prompt reading is
left out) is one sample; prints the median ratio and its interquartile range, and the overhead
as 1 - 1 / ratio (the share of throughput the head costs). Pause anything else first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from introllm.benchmarks.servers import Server, cpu_description, start, stop

MODEL = "smollm2-135m-instruct"


def time_per_token(client, temperature: float | None, seed: int, tokens: int) -> float:
    """Seconds per streamed output token after the first, of one completion."""
    extra = {} if temperature is None else {"temperature": temperature}
    stream = client.completions.create(
        model=MODEL,
        prompt=f"Story {seed}: once upon a time",
        max_tokens=tokens,
        stream=True,
        seed=seed,
        extra_body={"ignore_eos": True},
        **extra,
    )
    first = last = None
    count = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            last = time.perf_counter()
            first = first or last
            count += 1
    if count < 2:
        raise RuntimeError(f"a completion streamed {count} chunks; need at least 2")
    return (last - first) / (count - 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--backend",
        default="llamacpp",
        choices=["auto", "torch", "vllm", "llamacpp"],
        help="backend of the server to start [llamacpp]",
    )
    ap.add_argument("--url", help="measure this running server instead of starting one")
    ap.add_argument("--pairs", type=int, default=40, help="learned / fixed pairs of completions [40]")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per completion [64]")
    ap.add_argument("--fixed", type=float, default=1.0, help="the fixed temperature compared with [1.0]")
    ap.add_argument("--json", help="also write the samples here")
    args = ap.parse_args(argv)
    if args.pairs < 2 or args.tokens < 3:
        ap.error("--pairs must be >= 2 and --tokens >= 3")
    import openai

    proc = None
    url = args.url
    if url is None:
        argv_ = [sys.executable, "-m", "introllm", "serve", "--backend", args.backend, "--port", "{port}"]
        log = Path(tempfile.mkdtemp(prefix="introllm-overhead-")) / "server.log"
        try:
            proc, url, _ = start(Server(f"introllm {args.backend}", "", argv_, None, False), log, 900)
        except RuntimeError as e:
            print(f"error: the server did not start ({e}); its log: {log}", file=sys.stderr)
            return 1
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        time_per_token(client, None, 0, args.tokens)  # warm-up
        learned, fixed = [], []
        for k in range(args.pairs):
            order = (None, args.fixed) if k % 2 else (args.fixed, None)
            for temperature in order:
                (learned if temperature is None else fixed).append(time_per_token(client, temperature, k, args.tokens))
    except (openai.APIError, RuntimeError) as e:
        print(f"error: {url}: {e}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop(proc)
    ratios = [a / b for a, b in zip(learned, fixed)]
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    print(f"# {cpu_description()}; {args.pairs} pairs of {args.tokens}-token streamed completions, one client")
    print(
        f"ms per token: learned {1e3 * statistics.median(learned):.2f}, fixed:{args.fixed:g} {1e3 * statistics.median(fixed):.2f}"
    )
    print(
        f"learned / fixed time per token: median {median:.3f} [IQR {q1:.3f}, {q3:.3f}]; "
        f"throughput cost of the head {100 * (1 - 1 / median):.1f} % [{100 * (1 - 1 / q1):.1f}, {100 * (1 - 1 / q3):.1f}]"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": cpu_description(), "learned_s": learned, "fixed_s": fixed}) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
