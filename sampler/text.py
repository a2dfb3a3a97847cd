"""Tokenizer helpers shared by the CLI, the server and the trainer (the engine itself sees ids only)."""

from __future__ import annotations

from typing import Sequence


def prompt_ids(tokenizer, prompt: str, *, chat: bool, system: str | None = None) -> list[int]:
    """Token ids for a prompt: wrapped in the model's chat template when ``chat``, raw otherwise."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; use a raw prompt")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return chat_ids(tokenizer, messages)
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def chat_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a conversation with the generation prompt appended."""
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


class Detokenizer:
    """Incremental decoding: ``push(token_id)`` returns the text that token adds.

    Decoding token by token breaks characters spread over several tokens (multi-byte UTF-8
    becomes U+FFFD) and loses the spaces some tokenizers attach while decoding a sequence. Here
    each call decodes a short window of recent tokens twice (with and without the new one) and
    returns the difference; text that ends in an incomplete character is held back until the
    token that completes it. The pieces join to ``decode(ids)`` for byte-level BPE tokenizers,
    and each push costs O(window), not O(length).
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens before this have had their text returned

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end), as decoded."""
        rest = self._decode(self.ids[self._prefix :])[len(self._decode(self.ids[self._prefix : self._read])) :]
        self._prefix = self._read = len(self.ids)
        return rest


def token_pieces(tokenizer, ids: Sequence[int], skip_special_tokens: bool = True) -> list[str]:
    """The text each token adds, such that ``"".join(pieces) == decode(ids)`` (see Detokenizer)."""
    detok = Detokenizer(tokenizer, skip_special_tokens)
    pieces = [detok.push(i) for i in ids]
    if pieces:
        pieces[-1] += detok.flush()
    return pieces
