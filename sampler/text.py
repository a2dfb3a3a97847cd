"""Tokenizer helpers shared by the CLI, the server and the trainer (the engine itself sees ids only)."""

from __future__ import annotations

import re
from collections.abc import Sequence


def prompt_ids(tokenizer, prompt: str, *, chat: bool, system: str | None = None) -> list[int]:
    """Token ids for a prompt: wrapped in the model's chat template when ``chat``, raw otherwise."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; use a raw prompt")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return chat_ids(tokenizer, messages)
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def chat_ids(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a conversation with the generation prompt appended.

    Message contents are plain text: a special-token string written inside one (``<|im_end|>``,
    ``<|eot_id|>``...) is tokenized as ordinary text, so only the chat template's own markup
    yields control tokens and a message cannot close its turn and open another (prompt
    injection). Conversations without such strings are tokenized exactly as
    ``apply_chat_template`` does; see ``_plain_text_chat_ids`` for the others.

    Raises whatever the template raises for a conversation it rejects (e.g. role order).
    """
    messages = list(messages)
    controls = _control_tokens(tokenizer)
    if not controls or not any(
        isinstance(m.get("content"), str) and controls.pattern.search(m["content"]) for m in messages
    ):
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    return _plain_text_chat_ids(tokenizer, messages, controls)


class _Controls:
    """The tokenizer's special (control) tokens: their strings, ids, strip flags and a regex
    finding them leftmost-longest, as the tokenizer's own added-token matcher does."""

    def __init__(self, tokenizer):
        added = {
            int(i): t for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special and t.content
        }
        self.ids = {t.content: i for i, t in added.items()}
        self.tokens = {t.content: t for t in added.values()}
        names = sorted(self.ids, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(n) for n in names)) if names else None

    def __bool__(self) -> bool:
        return self.pattern is not None


def _control_tokens(tokenizer) -> _Controls:
    """Built per call (a few hundred added tokens at most): a cache could go stale when tokens are added."""
    return _Controls(tokenizer)


def _placeholders(controls: _Controls, texts: Sequence[str]) -> dict[str, str]:
    """One private-use character per control token, found in none of ``texts``."""
    used = set("".join(texts))
    free = (chr(c) for c in range(0xF0000, 0xFFFFE) if chr(c) not in used)
    return {name: next(free) for name in controls.ids}


def _plain_text_chat_ids(tokenizer, messages: list[dict], controls: _Controls) -> list[int]:
    """The template rendered with each control-token string in a content swapped for a
    placeholder character, so the rendered text holds only the template's own control tokens;
    it is cut at those, each becomes its id, and the text between them (placeholders swapped
    back) is tokenized with ``split_special_tokens``, as text. The tokenizer itself tokenizes
    the text between control tokens separately too, so this agrees with it except that, on
    SentencePiece-style (Metaspace) tokenizers, a stretch after a control token may gain the
    word-start marker."""
    contents = [m["content"] for m in messages if isinstance(m.get("content"), str)]
    marks = _placeholders(controls, contents)
    back = {v: k for k, v in marks.items()}
    neutral = [
        {**m, "content": controls.pattern.sub(lambda x: marks[x.group(0)], m["content"])}
        if isinstance(m.get("content"), str)
        else m
        for m in messages
    ]
    text = tokenizer.apply_chat_template(neutral, add_generation_prompt=True, tokenize=False)
    restore = re.compile("|".join(map(re.escape, back)))

    def plain(run: str) -> list[int]:
        run = restore.sub(lambda x: back[x.group(0)], run)
        return list(tokenizer(run, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if run else []

    ids: list[int] = []
    pos = 0
    for match in controls.pattern.finditer(text):
        token = controls.tokens[match.group(0)]
        run = text[pos : match.start()]
        ids += plain(run.rstrip() if token.lstrip else run)
        ids.append(controls.ids[match.group(0)])
        pos = match.end()
        if token.rstrip:
            pos += len(text[pos:]) - len(text[pos:].lstrip())
    ids += plain(text[pos:])
    return ids


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
