import torch
from conftest import tiny_llama

from introllm.sampler.kernels import packed_linears, packing_supported


def test_packed_linears_match_plain_and_restore():
    model = tiny_llama()
    assert packing_supported(model)
    x = torch.randint(0, 100, (3, 9))
    with torch.no_grad():
        plain = model(x).logits
        with packed_linears(model):
            assert "forward" in vars(model.lm_head)
            packed = model(x).logits
        assert "forward" not in vars(model.lm_head)
        again = model(x).logits
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, plain)


def test_repacks_after_weight_update():
    model = tiny_llama()
    x = torch.randint(0, 100, (2, 5))
    with torch.no_grad():
        with packed_linears(model):
            before = model(x).logits
        model.lm_head.weight.mul_(2.0)  # what an optimizer step does: in place, version bumped
        with packed_linears(model):
            after = model(x).logits
        plain = model(x).logits
    torch.testing.assert_close(after, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)


def test_disabled_and_unsupported_are_no_ops():
    model = tiny_llama()
    with packed_linears(model, enabled=False):
        assert "forward" not in vars(model.lm_head)
    model = model.to(torch.float64)
    assert not packing_supported(model)
    with packed_linears(model):
        assert "forward" not in vars(model.lm_head)
