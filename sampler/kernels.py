"""Faster CPU matmuls for decoding: oneDNN with weights packed ahead of time.

At decode batch sizes (a handful of rows) PyTorch's default CPU ``linear`` leaves much of the
memory bandwidth unused; oneDNN with pre-packed ("reordered") weights is what ``torch.compile``'s
CPU backend uses for the same reason. Measured on this project's 2-core machines: SmolLM2-135M's
output projection (576 x 49152) at 8 rows takes 22 ms with ``F.linear`` and 7.7 ms packed.

``packed_linears(model)`` swaps every ``nn.Linear`` of the model to the packed kernel for the
duration of a ``with`` block and restores it afterwards, so the same model object can be trained
in between. Packed copies are cached per module and rebuilt when the weight changes (an optimizer
step bumps the tensor's version counter). They cost one extra copy of the linear weights in memory.
Float32 only here (the bf16 kernel needs AVX-512/AVX-NE instructions); anything else, or a GPU,
runs unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

_PACK_HINT = 8  # expected rows per call; oneDNN picks its blocking from it (any row count works)


def packing_supported(model: nn.Module) -> bool:
    param = next(model.parameters())
    return (
        param.device.type == "cpu"
        and param.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class _Packed:
    __slots__ = ("weight", "version", "ptr")

    def __init__(self, weight: torch.Tensor):
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_HINT)
        self.version, self.ptr = weight._version, weight.data_ptr()

    def fresh(self, weight: torch.Tensor) -> bool:
        return weight._version == self.version and weight.data_ptr() == self.ptr


def _packed_forward(packed: torch.Tensor, bias: torch.Tensor | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


_CACHE_ATTR = "_introllm_packed"


@contextlib.contextmanager
def packed_linears(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, the model's ``nn.Linear`` layers run on pre-packed oneDNN weights.

    Inference only: the packed path has no autograd. A no-op when disabled or unsupported.
    """
    if not (enabled and packing_supported(model)):
        yield
        return
    patched = []
    try:
        for module in model.modules():
            if type(module) is not nn.Linear:
                continue
            packed = getattr(module, _CACHE_ATTR, None)
            if packed is None or not packed.fresh(module.weight):
                packed = _Packed(module.weight)
                object.__setattr__(module, _CACHE_ATTR, packed)
            bias = None if module.bias is None else module.bias.detach()
            object.__setattr__(module, "forward", _packed_forward(packed.weight, bias))
            patched.append(module)
        yield
    finally:
        for module in patched:
            object.__delattr__(module, "forward")
