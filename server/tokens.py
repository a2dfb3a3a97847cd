"""Each token's own raw bytes, and its name in OpenAI's log-probability objects.

A byte-level BPE token can hold part of a UTF-8 character ("日" is ``e6 97 a5``, often split over
two tokens), so ``decode([id])`` cannot say what the token is: it gives U+FFFD or nothing, and two
different partial tokens collapse onto the same string. The token's own bytes come from the
vocabulary instead: ``convert_ids_to_tokens`` gives the vocabulary entry (``"æĹ"``), whose
characters map back to bytes through the byte-level alphabet (GPT-2's ``bytes_to_unicode``).
SentencePiece vocabularies with byte fallback write single bytes as ``<0xE3>`` and spaces as ``▁``.

Names follow OpenAI's chat ``logprobs`` objects: a token whose bytes are valid UTF-8 is named by
its text; one that is not is named ``bytes:`` followed by its bytes with the invalid ones escaped
(``bytes:\\xe3\\x81``), so distinct tokens keep distinct names (OpenAI API reference, "The chat
completion object", ``logprobs.content[].token`` and ``bytes``).
"""

from __future__ import annotations

import json
import re
import threading

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_name(raw: bytes) -> str:
    """OpenAI's name for a token with these bytes.

    >>> token_name("日".encode()), token_name(b"\\xe6\\x97")
    ('日', 'bytes:\\\\xe6\\\\x97')
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + raw.decode("utf-8", errors="backslashreplace")


def _decoder_types(tokenizer) -> set[str]:
    """The types of the fast tokenizer's decoder (and of the decoders in a Sequence decoder)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return {d.get("type") for d in parts if isinstance(d, dict)}


class TokenBytes:
    """``raw(id)`` -> that token's own bytes; ``name(id)`` -> its OpenAI name. Cached per id.

    Added tokens (``<|im_end|>`` and the like) are their own text. Tokenizers that are neither
    byte-level nor SentencePiece with byte fallback get ``decode([id])`` encoded as UTF-8, which
    is exact for every token that holds whole characters.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        kinds = _decoder_types(tokenizer)
        self.byte_level = "ByteLevel" in kinds
        self.byte_fallback = "ByteFallback" in kinds
        self.added = {int(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        self.special = {int(i) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
        if self.byte_level:
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            self._byte_of = {c: b for b, c in bytes_to_unicode().items()}
        self._cache: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def raw(self, token_id: int) -> bytes:
        """The token's own bytes (see the module docstring)."""
        cached = self._cache.get(token_id)
        if cached is not None:
            return cached
        value = self._compute(int(token_id))
        with self._lock:
            self._cache[token_id] = value
        return value

    def name(self, token_id: int) -> str:
        return token_name(self.raw(token_id))

    def _compute(self, token_id: int) -> bytes:
        if token_id in self.added:
            return self.added[token_id].encode()
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return b""
        if self.byte_level and all(c in self._byte_of for c in piece):
            return bytes(self._byte_of[c] for c in piece)
        if self.byte_fallback:
            m = _BYTE_FALLBACK.fullmatch(piece)
            if m:
                return bytes([int(m.group(1), 16)])
            return piece.replace("\u2581", " ").encode()
        return self.tokenizer.decode([token_id]).encode()
