"""Continuous batching: one decode loop in a thread, requests joining and leaving between steps.

The HTTP handlers run on the asyncio event loop; the engine runs here, in a single thread that owns
the ``DecodeBatch``. A request is queued by ``submit`` (bounded: ``QueueFull`` beyond
``max_queue``), joins the running batch at the next step when it has room (``max_batch``
sequences), and from then on gets, after every step, the events of its sequences through an
``asyncio.Queue`` (one thread-safe hand-off per request per step). ``cancel`` — a client that went
away — removes its sequences before the next step, so their slots are free for others.

Text is produced here too: each sequence has an incremental detokenizer and a stop-string check,
so a stop string ends its sequence in the very step that completed it. Text that could be the
start of a stop string is held back until it is clear it is not.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from introllm.sampler import GenerationEngine, Sequence
from introllm.sampler.records import PromptRow
from introllm.sampler.text import Detokenizer

from .metrics import Metrics
from .prepare import Plan
from .records import Done, Failed, Token, TokenLogprob
from .tokens import TokenBytes

log = logging.getLogger(__name__)


IMPOSSIBLE_LOGPROB = -9999.0
"""What a token that could not be sampled (filtered out by top-k / top-p: log-prob -inf) is
reported with, as OpenAI does: JSON has no -inf."""


def finite_logprob(logprob: float) -> float | None:
    """-inf -> IMPOSSIBLE_LOGPROB; NaN (a backend that did not compute it) -> None; else as is."""
    if math.isnan(logprob):
        return None
    return max(float(logprob), IMPOSSIBLE_LOGPROB)


class QueueFull(Exception):
    """The waiting queue is at max_queue."""


@dataclass
class Request:
    """What a handler submits: its validated plan (see prepare). ``events`` receives lists of
    Token records (one list per decode step), then Done or Failed."""

    request_id: str
    plan: Plan
    arrival: float = field(default_factory=time.monotonic)
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue | None = None
    cancelled: bool = False
    # scheduler-side
    seqs: list[Sequence] = field(default_factory=list)
    open_choices: int = 0

    @property
    def num_rows(self) -> int:
        return len(self.plan.prompts) * self.plan.n

    def rows(self) -> list[PromptRow]:
        """One PromptRow per prompt, its samples numbered as if the request were alone, so that a
        seeded request reproduces whatever shares its batch."""
        n = self.plan.n
        return [PromptRow(p, self.plan.params, n, self.request_id, i * n) for i, p in enumerate(self.plan.prompts)]


def held_back(text: str, stop: str) -> int:
    """Length of the longest proper prefix of ``stop`` that ``text`` ends with (0: none): text that
    could still become the stop string. Only the places where ``stop``'s first character occurs
    in the last ``len(stop) - 1`` characters are tried, so a long stop string costs little.

    >>> held_back("the end of", "of the"), held_back("ab", "abc"), held_back("xyz", "abc")
    (2, 2, 0)
    """
    if not stop:
        return 0
    i = text.find(stop[0], max(0, len(text) - len(stop) + 1))
    while i != -1:
        if stop.startswith(text[i:]):  # the earliest match is the longest
            return len(text) - i
        i = text.find(stop[0], i + 1)
    return 0


class _Text:
    """Detokenizer plus stop strings for one sequence."""

    def __init__(self, tokenizer, stop: list[str]):
        self.detok = Detokenizer(tokenizer)
        self.stop = stop
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of text already released

    def push(self, token_id: int, final: bool) -> tuple[str, str, bool]:
        """Returns (the token's piece, text to release now, whether a stop string was hit).
        ``len(self.text)`` before the call is the token's text offset."""
        piece = self.detok.push(token_id)
        if final:
            piece += self.detok.flush()
        self.text += piece
        if self.stop:
            hits = [i for i in (self.text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0]
            if hits:
                cut = min(hits)
                out, self.sent = self.text[self.sent : cut], max(self.sent, cut)
                self.text = self.text[:cut]
                return piece, out, True
            if not final:  # hold back a tail that could still become a stop string
                hold = max(held_back(self.text, s) for s in self.stop)
                end = max(self.sent, len(self.text) - hold)
                out, self.sent = self.text[self.sent : end], end
                return piece, out, False
        out, self.sent = self.text[self.sent :], len(self.text)
        return piece, out, False


class Scheduler:
    def __init__(self, engine: GenerationEngine, tokenizer, *, max_batch: int, max_queue: int, metrics: Metrics):
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self.batch = self._new_batch()
        self.token_bytes = TokenBytes(tokenizer)
        self._pending: collections.deque[Request] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running: dict[int, tuple[Request, _Text, int]] = {}  # id(seq) -> owner, text state, choice index
        self._last_token_at: dict[int, float] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="introllm-decode", daemon=True)

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def submit(self, request: Request) -> None:
        """Queue a request (call on the event loop). Raises QueueFull."""
        request.loop = asyncio.get_running_loop()
        request.events = asyncio.Queue()
        with self._lock:
            if len(self._pending) >= self.max_queue:
                raise QueueFull
            self._pending.append(request)
            self.metrics.queue_depth.set(len(self._pending))
        self._wake.set()

    def cancel(self, request: Request) -> None:
        """The client is gone: drop the request before the next step (thread-safe)."""
        request.cancelled = True
        self._wake.set()

    # ------------------------------------------------------------------ decode thread

    def _new_batch(self):
        """An empty batch that does not score the head's decisions: no response carries their
        log-probs (a trainer's batch does)."""
        batch = self.engine.new_batch()
        batch.score_actions = False
        return batch

    def _send(self, request: Request, item: Any) -> None:
        request.loop.call_soon_threadsafe(request.events.put_nowait, item)

    def _admit(self) -> None:
        """Move waiting requests into the batch while it has room, all in one prefill pass."""
        with self._lock:
            self._pending = collections.deque(r for r in self._pending if not r.cancelled)
            joining, rows = [], self.batch.num_running
            while self._pending and rows + self._pending[0].num_rows <= self.max_batch:
                joining.append(self._pending.popleft())
                rows += joining[-1].num_rows
            self.metrics.queue_depth.set(len(self._pending))
        if not joining:
            return
        try:
            self._add(joining)
        except Exception:  # prefill failed: find the request(s) that caused it; the others go on
            if len(joining) > 1:
                log.warning("prefill of %d requests failed; admitting them one by one", len(joining))
            for request in joining:
                try:
                    self._add([request])
                except Exception as e:  # this request only; the batch is intact (add validates before joining)
                    log.exception("prefill failed for request %s", request.request_id)
                    self._send(request, Failed(f"internal error while reading the prompt: {type(e).__name__}"))

    def _add(self, requests: list[Request]) -> None:
        groups = self.batch.add([row for request in requests for row in request.rows()])
        for request in requests:
            count = len(request.plan.prompts)
            request.seqs = [s for g in groups[:count] for s in g]
            groups = groups[count:]
            request.open_choices = len(request.seqs)
            for index, seq in enumerate(request.seqs):
                self._running[id(seq)] = (request, _Text(self.tokenizer, request.plan.stop), index)

    def _drop_cancelled(self) -> None:
        gone = [seq for seq in self.batch.rows if self._running[id(seq)][0].cancelled]
        if gone:
            self.batch.cancel(gone)
            for seq in gone:
                self._forget(seq)

    def _forget(self, seq: Sequence) -> None:
        self._running.pop(id(seq), None)
        self._last_token_at.pop(id(seq), None)

    def _loop(self) -> None:
        while not self._stopping:
            try:
                self._iteration()
            except Exception as e:  # the decode thread must outlive any failure: fail what is running
                log.exception("decode loop failed; failing %d running sequences", self.batch.num_running)
                self._fail_all(f"internal error while decoding: {type(e).__name__}")

    def _iteration(self) -> None:
        self._admit()
        self._drop_cancelled()
        self.metrics.running.set(self.batch.num_running)
        if not self.batch.num_running:
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            return
        start = time.monotonic()
        stop_hits: list[Sequence] = []
        broken: dict[int, tuple[Request, str]] = {}
        later: list[tuple[Request, list]] = []
        gaps: list[tuple[int, float]] = []  # (sequence, when its previous token went out) of the tokens sent later
        # A request's first token goes out as soon as it is drawn, while the forward pass for the
        # next step runs (its TTFT gains a step); the others after the step, as before, so that
        # their streams do not wake the event loop while llama.cpp's threads hold every core.
        # Sequences that must leave the batch leave after the step.
        try:
            stepped = self.batch.step(on_sampled=lambda seqs: self._dispatch(seqs, stop_hits, broken, later, gaps))
        finally:  # a forward pass that fails after the draw must not swallow what was dispatched
            for request, items in later:
                for item in items:
                    self._send(request, item)
            sent = time.monotonic()
            for seq_id, previous in gaps:  # inter-token latency as the client sees it: send to send
                self.metrics.itl.observe(sent - previous)
                if seq_id in self._running:
                    self._last_token_at[seq_id] = sent
        if stop_hits:
            self.batch.cancel(stop_hits)
            for seq in stop_hits:
                seq.finish_reason = "stop"
        for request, message in broken.values():
            self._fail(request, message)
        self.metrics.observe_step(len(stepped), time.monotonic() - start)

    def _dispatch(
        self,
        stepped: list[Sequence],
        stop_hits: list[Sequence],
        broken: dict[int, tuple[Request, str]],
        later: list[tuple[Request, list]],
        gaps: list[tuple[int, float]],
    ) -> None:
        """Send each sequence's newest token to its request: now where it is the request's first,
        else into ``later`` (request, items to send) and ``gaps`` (its inter-token latency, taken when
        it is sent). Collects, for the caller to act on after the
        step, the sequences that hit a stop string and the requests whose text failed."""
        now = time.monotonic()
        out: dict[int, tuple[Request, list[Token]]] = {}
        first: set[int] = set()  # requests whose first token this is
        for seq in stepped:
            if id(seq) not in self._running or id(self._running[id(seq)][0]) in broken:  # its request failed
                continue
            request, text, index = self._running[id(seq)]
            tok = seq.token_ids[-1]
            offset = len(text.text)
            try:
                piece, released, hit = text.push(tok, final=seq.finished)
            except Exception as e:  # e.g. a tokenizer that cannot decode: this request only
                log.exception("request %s failed while decoding its text", request.request_id)
                broken[id(request)] = (request, f"internal error while decoding the text: {type(e).__name__}")
                continue
            if hit and not seq.finished:
                stop_hits.append(seq)
            finish = "stop" if hit else seq.finish_reason
            tr = seq.trace
            event = self._record(index, tok, piece, released, offset, tr, finish)
            out.setdefault(id(request), (request, []))[1].append(event)
            previous = self._last_token_at.get(id(seq))
            if previous is None:  # sent now
                self.metrics.ttft.observe(now - request.arrival)
                first.add(id(request))
                self._last_token_at[id(seq)] = now
            else:  # sent after the step: its gap is measured then
                gaps.append((id(seq), previous))
            self.metrics.observe_token(tr.tau[-1], tr.updated[-1])
            if finish is not None:
                self._forget(seq)
                request.open_choices -= 1
        for request, events in out.values():
            if id(request) in broken:
                continue
            items: list = [events]
            if request.open_choices == 0:
                items.append(
                    Done(
                        prompt_tokens=request.plan.prompt_tokens,
                        completion_tokens=sum(len(s.token_ids) for s in request.seqs),
                    )
                )
            if id(request) in first:
                for item in items:
                    self._send(request, item)
            else:
                later.append((request, items))

    def _logprob(self, token_id: int, logprob: float) -> TokenLogprob:
        raw = self.token_bytes.raw(token_id)
        return TokenLogprob(token_id, self.token_bytes.name(token_id), raw, finite_logprob(logprob))

    def _record(self, index: int, tok: int, piece: str, released: str, offset: int, tr, finish: str | None) -> Token:
        """The Token record of a sequence's newest token (``tr``: its engine Trace)."""
        top = None
        if tr.top_logprobs and len(tr.top_logprobs) == len(tr.tau):
            top = tuple(self._logprob(int(t), float(v)) for t, v in tr.top_logprobs[-1])
        return Token(
            index=index,
            sampled=self._logprob(tok, tr.logp[-1]),
            piece=piece,
            text=released,
            text_offset=offset,
            tau=tr.tau[-1],
            updated=bool(tr.updated[-1]),
            top=top,
            finish_reason=finish,
        )

    def _fail(self, request: Request, message: str) -> None:
        """End one request with an error; its other sequences leave the batch."""
        mine = [seq for seq in request.seqs if id(seq) in self._running]
        self.batch.cancel([seq for seq in mine if not seq.finished])
        for seq in mine:
            self._forget(seq)
        request.open_choices = 0
        self._send(request, Failed(message))

    def _fail_all(self, message: str) -> None:
        requests = {id(r): r for r, _, _ in self._running.values()}
        for request in requests.values():
            self._send(request, Failed(message))
        self._running.clear()
        self._last_token_at.clear()
        self.batch = self._new_batch()
