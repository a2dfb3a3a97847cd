"""``introllm complete``: ask a running server and show each token coloured by its temperature."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from .common import positive_int

log = logging.getLogger("introllm")

EXAMPLES = """\
examples:
  introllm complete "The capital of France is"               completion, learned temperature
  introllm complete "Tell me a joke." --chat --stream         chat, tokens as they arrive
  introllm complete "Hi" --chat --temperature 0 --json        greedy, raw JSON
  introllm complete "Explain GRPO." --chat --html trace.html  also write an HTML page of the trace
"""


def add_parser(sub) -> None:
    comp = sub.add_parser(
        "complete",
        help="ask a running server and show each token coloured by its temperature",
        description="Send a prompt to an IntroLLM server (introllm serve) and print the completion with "
        "each token coloured by its sampling temperature, and a summary line.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("prompt", help="the prompt text")
    comp.add_argument(
        "--url",
        default=os.environ.get("INTROLLM_URL", "http://127.0.0.1:8000"),
        help="server URL [$INTROLLM_URL or http://127.0.0.1:8000]",
    )
    comp.add_argument("--api-key", default=os.environ.get("INTROLLM_API_KEY"), help="bearer key [$INTROLLM_API_KEY]")
    comp.add_argument("--model", help="model id (default: the server's first model)")
    comp.add_argument("--chat", action="store_true", help="use /v1/chat/completions (the prompt is the user message)")
    comp.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    comp.add_argument("--max-tokens", type=positive_int, default=128, help="most tokens to generate [128]")
    comp.add_argument("--temperature", type=float, help="a fixed temperature (0 = greedy); omit for the learned policy")
    comp.add_argument("--policy", help="a temperature policy by name (learned, fixed:0.7, ead, ...)")
    comp.add_argument("--seed", type=int, help="random seed")
    comp.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    comp.add_argument("--json", action="store_true", help="print the raw response JSON instead")
    comp.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page of the trace")
    comp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console
    from rich.text import Text

    from introllm.clients import Client
    from introllm.clients.html import trace_page
    from introllm.clients.render import TraceView, coloured_text, legend, summary, tau_colour

    client = Client(args.url, api_key=args.api_key, model=args.model)
    options = dict(
        max_tokens=args.max_tokens, temperature=args.temperature, policy=args.policy, seed=args.seed, stop=args.stop
    )
    console = Console(highlight=False)
    lo, hi = client.head_range()  # colours on the served head's own range
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
                    console.print(Text(tok, style=tau_colour(tau, lo, hi)), end="")
            elif piece.text:
                console.print(Text(piece.text, style=tau_colour(piece.temperatures[-1], lo, hi)), end="")
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
            console.print(coloured_text(view, lo, hi))
    seconds = time.perf_counter() - start
    if not args.json:
        console.print(legend(lo, hi))
        console.print(Text(summary(view, seconds), style="dim"))
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(trace_page(args.prompt, view.tokens, view.temperatures, view.updated, tau_min=lo, tau_max=hi))
        log.info("wrote %s", args.html)
    return 0
