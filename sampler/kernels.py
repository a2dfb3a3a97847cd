"""Faster CPU matmuls for decoding: oneDNN with weights packed ahead of time.

At decode batch sizes (a handful of rows) PyTorch's default CPU ``linear`` leaves much of the
memory bandwidth unused; oneDNN with pre-packed ("reordered") weights is what ``torch.compile``'s
CPU backend uses for the same reason (the measurements: docs/benchmarks.md, "Pre-packed oneDNN weights").

``Projection`` is one (possibly fused) linear layer on packed weights, for code that calls
projections itself (the engine's output layer, the fused decode step). ``packed_linears(model)``
swaps every ``nn.Linear`` of a model to the packed kernel for the duration of a ``with`` block
(the generic decode path), under a lock so that two engines sharing a model cannot undo each
other's swap. Packed copies are rebuilt when a weight changes (an optimizer step bumps the
tensor's version counter), so the same model object can be trained in between; they cost one
extra copy of the weights in memory. Float32 on CPU, and bfloat16 on CPUs with native bfloat16
(AVX512_BF16 or AMX, where oneDNN's bf16 kernels run on them; elsewhere they are emulated); other
cases get a plain ``F.linear`` from ``Projection`` and a no-op from ``packed_linears``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_PACK_HINT = 8  # expected rows per call; oneDNN picks its blocking from it (any row count works)


@functools.cache
def cpu_native_bf16() -> str | None:
    """Which native bfloat16 instructions this CPU has, as torch sees them ("AMX" or
    "AVX512_BF16"), or None. Asks torch (``torch.cpu._is_amx_tile_supported`` and
    ``_is_avx512_bf16_supported``, which read cpuinfo) rather than parsing /proc/cpuinfo."""
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return None


def packing_supported(module: nn.Module) -> bool:
    """True when ``module``'s weights can run through packed oneDNN kernels: on CPU, float32, or
    bfloat16 when the CPU has native bfloat16 (``cpu_native_bf16``)."""
    param = next(module.parameters())
    if param.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    return param.dtype == torch.float32 or (param.dtype == torch.bfloat16 and cpu_native_bf16() is not None)


def stamp(tensors: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """(storage, version) of each tensor: changes on an optimizer step (in place) and on ``to()``
    (new storage). Cheap enough to check once per decode step."""
    return [(t.data_ptr(), t._version) for t in tensors]


class Projection:
    """y = x W^T + b for one linear layer, or several fused along the output (q/k/v, gate/up).

    Holds its own (packed or concatenated) copy of the weights; ``stale()`` tells when the
    layers' weights have changed since.
    """

    def __init__(self, linears: Sequence[nn.Linear], packed: bool = True):
        self.linears = list(linears)
        self.sources = [p for lin in self.linears for p in (lin.weight, lin.bias) if p is not None]
        self._stamp = stamp(self.sources)
        w = [lin.weight.detach() for lin in self.linears]
        weight = torch.cat(w) if len(w) > 1 else w[0]
        biases = [lin.bias for lin in self.linears]
        self.bias = None
        if any(b is not None for b in biases):
            self.bias = torch.cat(
                [
                    b.detach() if b is not None else weight.new_zeros(lin.out_features)
                    for b, lin in zip(biases, self.linears)
                ]
            )
        self.packed = packed and packing_supported(self.linears[0])
        self.weight = (
            torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _PACK_HINT) if self.packed else weight
        )

    def stale(self) -> bool:
        """True when the layers' weights changed since this copy was made. (A layer given a new
        Parameter object is not noticed: build a new Projection, or a new Engine, after that.)"""
        return stamp(self.sources) != self._stamp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


_CACHE_ATTR = "_introllm_projection"
_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def packed_linears(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, the model's ``nn.Linear`` layers run on pre-packed oneDNN weights.

    Inference only: the packed path has no autograd. A no-op when disabled or unsupported.
    Blocks of different threads on any models run one at a time.
    """
    if not (enabled and packing_supported(model)):
        yield
        return
    with _PATCH_LOCK:
        patched = []
        try:
            for module in model.modules():
                if type(module) is not nn.Linear:
                    continue
                proj = getattr(module, _CACHE_ATTR, None)
                if proj is None or proj.stale():
                    proj = Projection([module])
                    object.__setattr__(module, _CACHE_ATTR, proj)
                object.__setattr__(module, "forward", proj)
                patched.append(module)
            yield
        finally:
            for module in patched:
                object.__delattr__(module, "forward")
