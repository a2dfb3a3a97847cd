"""Incremental detokenization and stop strings, with byte-level toy tokenizers (no model needed)."""

import pytest

from introllm.sampler.text import Detokenizer, token_pieces
from introllm.server.scheduler import _Text


class ByteTokenizer:
    """Token id = one UTF-8 byte, as byte-level BPE tokenizers are underneath."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def _ids(text):
    return list(text.encode())


@pytest.mark.parametrize("text", ["plain ascii", "ça va? 日本語 🤖🚀", "👩‍👩‍👧", "a\nb\n\n"])
def test_pieces_join_to_the_decoded_text_and_never_split_characters(text):
    pieces = token_pieces(ByteTokenizer(), _ids(text))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert len(pieces) == len(_ids(text))


def test_incomplete_character_at_the_end_is_flushed():
    detok = Detokenizer(ByteTokenizer())
    ids = _ids("ok 🤖")[:-1]  # cut inside the emoji
    out = "".join(detok.push(i) for i in ids)
    assert out == "ok "
    assert detok.flush() == "\ufffd"


def _run(text, stop, split=1):
    t = _Text(ByteTokenizer(), stop)
    ids = _ids(text)
    released, hit_at = "", None
    for k, i in enumerate(ids):
        piece, out, hit = t.push(i, final=k == len(ids) - 1)
        released += out
        if hit:
            hit_at = k
            break
    return released, hit_at


def test_stop_string_is_cut_even_across_tokens():
    released, hit_at = _run("The capital is Paris.", [" is"])
    assert released == "The capital" and hit_at == len("The capital is") - 1


def test_text_that_might_start_a_stop_string_is_held_then_released():
    t = _Text(ByteTokenizer(), ["STOP"])
    outs = [t.push(i, final=False)[1] for i in _ids("ab ST")]
    assert "".join(outs) == "ab "  # "ST" could become "STOP": held back
    assert t.push(ord("x"), final=False)[1] == "STx"  # it did not
    released, hit_at = _run("no stop here", ["STOP"])
    assert released == "no stop here" and hit_at is None


def test_earliest_of_several_stop_strings_wins():
    released, _ = _run("one, two; three", [";", ","])
    assert released == "one"
