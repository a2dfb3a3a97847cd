"""The llama.cpp backend: ``LlamaCppEngine`` and ``LlamaCppBatch`` offer the interface of ``Engine``
and ``DecodeBatch`` with llama.cpp (through llama-cpp-python's low-level API, no fork, no C of ours)
running the model, on CPUs and Macs at llama.cpp's speed. Needs the optional extra
``introllm[llamacpp]``.

llama.cpp does the forward passes and keeps the KV cache; everything that makes a trace mean what it
means is ours, the same code as the torch engine's: the temperature head reads the final-norm hidden
state h_t of each sequence's last position (llama.cpp's embeddings output with pooling NONE, which is
exactly the output norm's result, the lm_head input), the policy picks tau, and the token is drawn
from llama.cpp's logits with ``sampling.sample_tokens`` and the counter-based random numbers of
``rng``. So seeds, policies, logprobs (from the tempered distribution) and traces behave as on the
torch backend; only the logits differ, by llama.cpp's quantised arithmetic.

Continuous batching: each sample owns a llama.cpp sequence id (a slot) from its prefill to its end;
every step decodes the newest token of every running sequence in one ``llama_decode``. A prompt is
read with the embeddings output off (llama.cpp computes every position's embeddings and logits
while it is on), all but its last token; the last one is decoded with it on, giving the first
decision's h. The n samples of a prompt share its prefill (``llama_memory_seq_cp``).

Prefix cache: a finished or cancelled sequence's slot keeps its KV cells (its tokens recorded) until
the slot is needed. A new prompt takes the idle slot that holds the longest prefix of it and reads
only the rest, as llama-server's prompt cache and vLLM's prefix caching do: a repeated prompt, a
shared system prompt or a chat's next turn skips its prefill. With ``prefix_cache=False`` (or where
llama.cpp cannot cut a sequence short) a finished sequence's cells are freed at once.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import types
from collections.abc import Sequence as Seq
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .batch import DecodeBatch, check_rows
from .engine import run_to_completion
from .policies import PolicyCache, TemperaturePolicy
from .records import PromptRow, SamplingParams, Sequence

log = logging.getLogger(__name__)

MAX_SEQUENCES = 256
"""llama.cpp's limit on sequence ids in one context (LLAMA_MAX_SEQ)."""

SHARED_PREFIX_MIN = 8
"""Fewest tokens a prompt must share with an earlier prompt of the same prefill to copy its cells
instead of reading them; a partial share costs a second ``llama_decode`` (about two prompt
tokens' time at batch 1 on 2 AVX2 cores), so a few shared tokens are cheaper read."""


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two int32 token arrays."""
    m = min(len(a), len(b))
    differ = np.flatnonzero(a[:m] != b[:m])
    return int(differ[0]) if len(differ) else m


def _lib():
    try:
        import llama_cpp._logger as llama_logger
        import llama_cpp.llama_cpp as L
    except ImportError as e:
        from .backends import LLAMACPP_INSTALL

        raise ImportError(f"the llama.cpp backend needs llama-cpp-python ({e}): {LLAMACPP_INSTALL}") from None
    llama_logger.logger.setLevel(logging.ERROR)  # the binding echoes every llama.cpp log line otherwise
    return L


_I32P = ctypes.POINTER(ctypes.c_int32)


class _Batch:
    """A ``llama_batch`` whose arrays are numpy buffers (filled by slicing, no per-token ctypes
    calls); one sequence id per token. Never passed to ``llama_batch_free``: Python owns it."""

    def __init__(self, L, capacity: int):
        self.L, self.capacity = L, capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq = np.zeros(capacity, np.int32)
        self.out = np.zeros(capacity, np.int8)
        base = self.seq.ctypes.data
        self._seq_ptrs = (_I32P * capacity)(*[ctypes.cast(base + 4 * i, _I32P) for i in range(capacity)])
        b = L.llama_batch()
        b.token = self.token.ctypes.data_as(_I32P)
        b.embd = ctypes.POINTER(ctypes.c_float)()  # NULL: token ids
        b.pos = self.pos.ctypes.data_as(_I32P)
        b.n_seq_id = self.n_seq_id.ctypes.data_as(_I32P)
        b.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(_I32P))
        b.logits = self.out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.b, self.n = b, 0

    def add(self, tokens, first_pos: int, seq_id: int, output_last: bool) -> None:
        k = len(tokens)
        if self.n + k > self.capacity:
            raise ValueError(f"batch of {self.n + k} tokens exceeds {self.capacity}")
        s = slice(self.n, self.n + k)
        self.token[s] = tokens
        self.pos[s] = np.arange(first_pos, first_pos + k, dtype=np.int32)
        self.seq[s] = seq_id
        self.out[s] = 0
        if output_last:
            self.out[self.n + k - 1] = 1
        self.n += k

    def decode(self, ctx) -> None:
        self.b.n_tokens = self.n
        rc = self.L.llama_decode(ctx, self.b)
        self.n = 0
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc}: {'no KV cache slot' if rc == 1 else 'error'})")


class LlamaCppEngine:
    """Decoding with llama.cpp for a GGUF model plus (optionally) a temperature head.

    gguf: the model file (any family llama.cpp runs; the head must fit its hidden size);
    max_batch: sequences decoded together (llama.cpp sequence ids, at most 256); context: positions
    per sequence (prompt + completion); threads: llama.cpp's CPU threads (default: all cores);
    prefix_cache: idle slots keep their KV cells for a later prompt that starts the same way.
    Raises ImportError naming the install command when llama-cpp-python is missing, ValueError for a
    file llama.cpp cannot load.
    """

    def __init__(
        self,
        gguf: str | os.PathLike,
        head=None,
        *,
        max_batch: int = 64,
        context: int = 2048,
        threads: int | None = None,
        prefill_batch: int = 512,
        prefix_cache: bool = True,
    ):
        L = self.L = _lib()
        path = Path(gguf)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        if not 1 <= max_batch <= MAX_SEQUENCES:
            raise ValueError(f"max_batch must be in [1, {MAX_SEQUENCES}] on the llama.cpp backend, got {max_batch}")
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self._model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self._model:
            raise ValueError(f"{path}: llama.cpp cannot load this file (not a GGUF model it supports)")
        threads = threads or os.cpu_count() or 1
        context = -(-context // 256) * 256  # llama.cpp pads each sequence's cells to a multiple of 256
        cp = L.llama_context_default_params()
        cp.n_seq_max = max_batch
        cp.n_ctx = max_batch * context  # each sequence its own stream of `context` cells (kv_unified off)
        cp.n_batch = max(prefill_batch, max_batch)
        cp.n_ubatch = max(prefill_batch, max_batch)
        cp.n_threads = cp.n_threads_batch = threads
        cp.embeddings = False
        cp.pooling_type = L.LLAMA_POOLING_TYPE_NONE  # one embedding (h) per token
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            raise ValueError(f"llama.cpp could not create a context of {max_batch} x {context} positions")
        self._mem = L.llama_get_memory(self._ctx)
        vocab = L.llama_model_get_vocab(self._model)
        self.vocab_size = int(L.llama_vocab_n_tokens(vocab))
        self.hidden_size = int(L.llama_model_n_embd(self._model))
        self.max_context = context
        self.max_batch = max_batch
        self.prefill_batch = cp.n_batch
        self.threads = threads
        self.eos_token_ids = frozenset(t for t in range(self.vocab_size) if L.llama_vocab_is_eog(vocab, t))
        self.head = head
        self.path = path
        self.device = torch.device("cpu")
        self._policies = PolicyCache()
        self._batch = _Batch(L, cp.n_batch)
        self._free = list(range(max_batch))  # slots holding nothing
        self.prefix_cache = prefix_cache
        # idle slots still holding a finished sequence's cells: slot -> its tokens (int32); the lowest
        # idle slot is the one taken (and emptied) next, whatever its age (see _take_empty)
        self._cached: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.reused_tokens = 0  # prompt tokens read from the prefix cache instead of prefilled (a counter)
        log.info(
            "llama.cpp: %s, %d sequences x %d positions, %d threads, hidden size %d",
            path.name,
            max_batch,
            context,
            threads,
            self.hidden_size,
        )

    def fingerprint(self) -> types.SimpleNamespace:
        """The model's family and shape as ``checkpoint.base_fingerprint`` reads them (from the
        GGUF's metadata), so that a head is checked against it as against a Hugging Face config."""
        buf = ctypes.create_string_buffer(128)
        n = self.L.llama_model_meta_val_str(self._model, b"general.architecture", buf, len(buf))
        model_type = buf.value.decode() if n > 0 else "unknown"
        return types.SimpleNamespace(
            model_type=model_type,
            hidden_size=self.hidden_size,
            num_hidden_layers=int(self.L.llama_model_n_layer(self._model)),
            vocab_size=self.vocab_size,
        )

    def policy(self, spec: str) -> TemperaturePolicy:
        """The policy object for ``spec``, shared by the requests that name it."""
        return self._policies.get(spec, self.head)

    def new_batch(self) -> LlamaCppBatch:
        return LlamaCppBatch(self)

    def generate(self, prompts, params=SamplingParams(), n: int = 1, on_step=None) -> list[list[Sequence]]:
        """As ``Engine.generate``: every prompt decoded n times; per prompt its finished sequences."""
        return run_to_completion(self.new_batch(), prompts, params, n, on_step)

    # ------------------------------------------------------------------ the llama.cpp side

    def take_slots(self, prompts: Seq[Seq[int]], ns: Seq[int], *, alone: bool = False) -> list[tuple[list[int], int]]:
        """Slots for ``ns[i]`` samples of each prompt: per prompt (its slots, how many of its tokens
        the first slot already holds from the prefix cache; at most all but its last token).
        ``alone``: nothing else is running, so one sequence may stay where its prefix is cached.
        Raises ValueError, taking nothing, when they do not fit."""
        if sum(ns) > len(self._free) + len(self._cached):
            raise ValueError(
                f"{sum(ns)} new sequences do not fit: {len(self._free) + len(self._cached)} of "
                f"{self.max_batch} llama.cpp sequences are free (--max-batch)"
            )
        out = []
        alone = alone and sum(ns) == 1
        for prompt, n in zip(prompts, ns):
            first, reused = self._best_prefix(prompt, alone)
            out.append(([first] + [self._take_empty() for _ in range(n - 1)], reused))
        return out

    def _best_prefix(self, prompt: Seq[int], alone: bool = False) -> tuple[int, int]:
        """(slot, tokens it holds) for the prompt: the lowest idle slot, holding a copy of the longest
        prefix of ``prompt`` any idle slot holds (0 tokens if none). ``alone`` (a single sequence with
        nothing else running, where the range of slots costs nothing): the slot holding that prefix
        itself, else the lowest free slot, so that the cache keeps every other prompt."""
        ids = np.asarray(prompt[:-1], dtype=np.int32)  # the last token is always decoded: its h is needed
        best, held = None, 0
        for slot, tokens in self._cached.items():
            common = _common_prefix(tokens, ids)
            if common > held:
                best, held = slot, common
        if alone and best is not None:
            del self._cached[best]
            slot = best
        elif alone and self._free:
            slot = min(self._free)
            self._free.remove(slot)
        else:
            slot = self._take_empty(keep=best)
        if best is None:
            return slot, 0
        L = self.L
        if slot != best:  # the copy stays cached
            L.llama_memory_seq_cp(self._mem, best, slot, -1, -1)
        # cut the cells past the shared prefix; a model whose memory cannot be cut starts over
        if not L.llama_memory_seq_rm(self._mem, slot, held, -1):
            L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            held = 0
        return slot, held

    def _take_empty(self, keep: int | None = None) -> int:
        """The lowest-numbered idle slot, emptied (a cached one loses its cells), or ``keep`` itself
        with its cells if it is the lowest. Running sequences stay on the lowest slots because
        llama.cpp attends over the whole range of slots a batch spans: 16 sequences spread over 64
        slots decode 50 % slower than on 16 adjacent ones (2 AVX2 cores)."""
        slot = min(self._free + list(self._cached))
        if slot == keep:
            del self._cached[slot]
        elif slot in self._cached:
            del self._cached[slot]
            self.L.llama_memory_seq_rm(self._mem, slot, -1, -1)
        else:
            self._free.remove(slot)
        return slot

    def free_slots(self, slots: list[int], tokens: Seq[Seq[int]] | None = None) -> None:
        """Give slots back. ``tokens``: what each slot's cells hold (positions 0 .. len - 1), kept in
        the prefix cache; None (or the cache off): the cells are freed."""
        for i, slot in enumerate(slots):
            cache = tokens is not None and self.prefix_cache and len(tokens[i])
            # a memory that dropped early positions (a sliding window) cannot serve a prefix: not cached
            if cache and self.L.llama_memory_seq_pos_min(self._mem, slot) == 0:
                held = np.asarray(tokens[i], dtype=np.int32)
                if self.L.llama_memory_seq_rm(self._mem, slot, len(held), -1):  # nothing past what is recorded
                    self._cached[slot] = held
                    continue
            self.L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            self._free.append(slot)

    def drop_prefix_cache(self) -> None:
        """Free the cells of every idle slot: later prompts are read from scratch."""
        while self._cached:
            slot, _ = self._cached.popitem()
            self.L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            self._free.append(slot)

    def prefill(self, prompts: list[tuple[int, ...]], slots: list[tuple[list[int], int]]) -> None:
        """Read each prompt but its last token into its first slot (embeddings off, no outputs),
        from the position its cached prefix ends at, then copy it to the prompt's other slots (its
        other samples). ``slots``: as ``take_slots`` returns them.

        Prompts of one call that start alike (clients sending the same prompt or system prompt at
        once) are read once: a prompt that shares at least ``SHARED_PREFIX_MIN`` tokens (and more
        than its slot's cached prefix) with an earlier one of the call copies that one's cells for
        the shared part; an identical one reads nothing, one that goes on reads the rest in a
        second pass (a second ``llama_decode``)."""
        L, mem = self.L, self._mem
        L.llama_set_embeddings(self._ctx, False)
        bodies = [np.asarray(prompt[:-1], dtype=np.int32) for prompt in prompts]
        leaders: list[int] = []
        first: list[tuple[np.ndarray, int, int]] = []  # (tokens, slot, from position)
        rest: list[tuple[np.ndarray, int, int, int]] = []  # (tokens, slot, shared, the slot shared from)
        for i, (body, (group, held)) in enumerate(zip(bodies, slots)):
            source, shared = None, max(held, SHARED_PREFIX_MIN - 1)
            for j in leaders:
                common = _common_prefix(bodies[j], body)
                if common > shared:
                    source, shared = j, common
            if source is None:
                leaders.append(i)
                first.append((body, group[0], held))
                self.reused_tokens += held
                continue
            rest.append((body, group[0], shared, slots[source][0][0]))
        self._read(first)
        second = []
        for body, slot, shared, source in rest:  # copied once the leaders' cells are there
            L.llama_memory_seq_rm(mem, slot, -1, -1)
            L.llama_memory_seq_cp(mem, source, slot, -1, -1)
            if not L.llama_memory_seq_rm(mem, slot, shared, -1):  # a memory that cannot be cut: from scratch
                L.llama_memory_seq_rm(mem, slot, -1, -1)
                shared = 0
            self.reused_tokens += shared
            second.append((body, slot, shared))
        self._read(second)
        for prompt, (group, _) in zip(prompts, slots):
            for other in group[1:]:
                L.llama_memory_seq_cp(mem, group[0], other, -1, -1)

    def _read(self, parts: list[tuple[np.ndarray, int, int]]) -> None:
        """Decode each (tokens, slot, start): tokens[start:] at positions start.., no outputs, in
        as few ``llama_decode`` calls of at most ``prefill_batch`` tokens as they fit in."""
        b = self._batch
        for body, slot, held in parts:
            for start in range(held, len(body), self.prefill_batch):
                chunk = body[start : start + self.prefill_batch]
                if b.n + len(chunk) > self.prefill_batch:
                    b.decode(self._ctx)
                b.add(chunk, start, slot, output_last=False)
        if b.n:
            b.decode(self._ctx)

    def decode_last(self, tokens: list[int], positions: list[int], slots: list[int]) -> tuple[Tensor, Tensor]:
        """One token for each of ``slots`` at ``positions``, in one llama_decode with the embeddings
        output on: (logits float32 [B, V], h float32 [B, d]), copied out of llama.cpp's buffers."""
        L, b = self.L, self._batch
        L.llama_set_embeddings(self._ctx, True)
        count = len(tokens)
        b.token[:count] = tokens
        b.pos[:count] = positions
        b.seq[:count] = slots
        b.out[:count] = 1
        b.n = count
        b.decode(self._ctx)
        logits = np.ctypeslib.as_array(L.llama_get_logits(self._ctx), shape=(count, self.vocab_size))
        h = np.ctypeslib.as_array(L.llama_get_embeddings(self._ctx), shape=(count, self.hidden_size))
        return torch.from_numpy(logits.copy()), torch.from_numpy(h.copy())

    @torch.inference_mode()
    def score(self, prompt: Seq[int], tokens: Seq[int]) -> tuple[Tensor, Tensor]:
        """llama.cpp's view of a whole sequence: (logits float32 [T, V], h float32 [T, d]) at the
        positions that predict each of the T ``tokens`` after ``prompt`` (one decode with every
        position an output, in a free slot): what the PIT probe and the h-vs-HF check compare."""
        ids = np.asarray(list(prompt) + list(tokens)[:-1], dtype=np.int32)
        if len(ids) > self.prefill_batch or len(ids) + 1 > self.max_context:
            raise ValueError(f"a sequence of {len(ids) + 1} tokens is too long to score here")
        if not self._free and not self._cached:
            raise ValueError(f"every one of the {self.max_batch} llama.cpp sequences is running; none is free to score")
        slot = self._take_empty()
        try:
            self.L.llama_set_embeddings(self._ctx, True)
            b = self._batch
            b.add(ids, 0, slot, output_last=False)
            b.out[: len(ids)] = 1
            b.decode(self._ctx)
            n = len(ids)
            logits = np.ctypeslib.as_array(self.L.llama_get_logits(self._ctx), shape=(n, self.vocab_size))
            h = np.ctypeslib.as_array(self.L.llama_get_embeddings(self._ctx), shape=(n, self.hidden_size))
            first = len(prompt) - 1
            return torch.from_numpy(logits[first:].copy()), torch.from_numpy(h[first:].copy())
        finally:
            self.free_slots([slot])

    def close(self) -> None:
        """Free llama.cpp's context and model (also done when the engine is collected)."""
        if getattr(self, "_ctx", None):
            self.L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self.L.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class LlamaCppBatch(DecodeBatch):
    """``batch.DecodeBatch`` on llama.cpp: the same rows, state, policies, sampling and random
    numbers; llama.cpp holds the KV cache (a slot per row, ``state["slot"]``) and gives, with each
    step's logits, the hidden states the head reads."""

    def __init__(self, engine: LlamaCppEngine):
        super().__init__(engine)
        self.logits: Tensor | None = None  # [B, V] float32: llama.cpp's logits of each row's last token

    @torch.inference_mode()
    def add(self, rows: Seq[PromptRow]) -> list[list[Sequence]]:
        return self._add(rows)

    def _prefill(self, rows: Seq[PromptRow]):
        engine: LlamaCppEngine = self.engine
        check_rows(rows, engine.vocab_size, engine.max_context)
        taken = engine.take_slots([r.prompt for r in rows], [r.n for r in rows], alone=not self.rows)
        slots = [slot for group, _ in taken for slot in group]
        try:
            engine.prefill([r.prompt for r in rows], taken)
            last = [r.prompt[-1] for r in rows for _ in range(r.n)]
            positions = [len(r.prompt) - 1 for r in rows for _ in range(r.n)]
            logits, h = engine.decode_last(last, positions, slots)
        except Exception:
            engine.free_slots(slots)
            raise
        position = torch.tensor([len(r.prompt) for r in rows for _ in range(r.n)], dtype=torch.long)
        return h, position, (slots, logits)

    def _join(self, rows, state, stops, layout, h) -> None:
        slots, logits = layout
        state = {**state, "slot": torch.tensor(slots, dtype=torch.long)}
        self._append(rows, state, stops, h=h, logits=logits)

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        kept = set(keep)
        gone = [i for i in range(len(self.rows)) if i not in kept]
        # what a leaving row's cells hold: its prompt and every token but the newest (never fed back)
        held = [self.rows[i].prompt_ids + self.rows[i].token_ids[:-1] for i in gone]
        self.engine.free_slots([int(self.state["slot"][i]) for i in gone], held)
        if not keep:
            self.rows, self.state, self._stops, self.h, self.logits = [], {}, [], None, None
            return
        self._select(keep, "h", "logits")

    def _logits(self) -> Tensor:
        return self.logits

    def close(self) -> None:
        """Free the KV cells of every sequence still in this batch (also when it is collected)."""
        if self.rows:
            self._keep([])

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _advance(self, tokens: Tensor) -> None:
        s = self.state
        self.logits, self.h = self.engine.decode_last(tokens.tolist(), s["position"].tolist(), s["slot"].tolist())
        s["position"] = s["position"] + 1


def load_llamacpp(
    checkpoint: str | os.PathLike | None = None,
    head: str | None = None,
    *,
    max_batch: int = 64,
    context: int = 2048,
    threads: int | None = None,
):
    """(engine, tokenizer, path) for the llama.cpp backend.

    checkpoint: None for the embedded SmolLM2-135M-Instruct, run from its GGUF as shipped (Q4_1),
    with its tokenizer from the converted checkpoint; or a .gguf file (the tokenizer read from it by
    transformers). head: as ``models.load_model``'s (None: for the embedded model the trained default
    head; a GGUF file carries none, so ``--head DIR`` or ``--head init`` is needed; a head whose
    hidden size or base-model family does not fit the GGUF is refused, naming both).

    Raises ValueError / CheckpointError / FileNotFoundError with a message that says what to do."""
    from .models import choose_head, default_checkpoint, describe_head, embedded_gguf, initial_head

    if checkpoint is None:
        path = embedded_gguf()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(default_checkpoint())
    else:
        path = Path(checkpoint)
        if path.is_dir() or path.suffix.lower() != ".gguf":
            raise ValueError(
                f"{path}: the llama.cpp backend reads a .gguf file (convert a checkpoint with llama.cpp's "
                "convert_hf_to_gguf.py), not a checkpoint directory"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        if head is None:
            raise ValueError(
                f"{path} carries no temperature head: give --head DIR (a head trained for this model) or --head init"
            )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    engine = LlamaCppEngine(path, None, max_batch=max_batch, context=context, threads=threads)
    log.info("llama.cpp backend: %s with %s", path.name, describe_head(checkpoint, head))
    engine.head = choose_head(checkpoint, head, engine.hidden_size, engine.fingerprint()) or initial_head(
        engine.hidden_size
    )
    engine.head = engine.head.float().eval()
    return engine, tokenizer, path
