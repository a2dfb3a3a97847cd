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


def token_pieces(tokenizer, ids: Sequence[int], skip_special_tokens: bool = True) -> list[str]:
    """The text each token adds, such that ``"".join(pieces) == decode(ids)``.

    Decoding token by token breaks characters that span several tokens (multi-byte UTF-8 becomes
    U+FFFD); decoding growing prefixes does not. A piece that ends in an incomplete character is
    held back and released with the token that completes it. (Assumes decoding is prefix-stable,
    as it is for byte-level BPE tokenizers.) Quadratic in length: meant for one completion.
    """
    pieces, emitted = [], ""
    for i in range(1, len(ids) + 1):
        text = tokenizer.decode(list(ids[:i]), skip_special_tokens=skip_special_tokens)
        if text.endswith("\ufffd") and i < len(ids):
            pieces.append("")
            continue
        pieces.append(text[len(emitted) :])
        emitted = text
    return pieces
