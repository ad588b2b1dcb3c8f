"""The peak activation memory of a network call, read off its graph on the ``meta`` device.

:func:`trace_peak` runs a function on meta tensors (shapes and dtypes, no data, no compute)
under a ``TorchDispatchMode`` that sees every aten op the call makes. Each op's outputs are
registered by their *storage* (views share their base's), with a weak reference; after every op
the bytes of the storages still alive are summed. A storage that existed before the call (the
weights: ``F.linear`` views every weight through ``aten.t``, whose output *is* the weight's
storage) is never counted: only storages an op allocates are, so the weights (which the
estimate counts once, from the modules) do not come back as a constant in every call. The
maximum of that sum is the peak of the call as its Python code holds tensors: the same liveness
the real run has on any device (PyTorch frees a tensor when its last reference goes), so the
coefficients come from the architecture itself, not from a constant. What it cannot see:
kernel workspaces (cuDNN, GEMM), oneDNN's reordered copies on the CPU and allocator rounding,
which ``warpdiff bench memory`` measures (README "Memory planning").

Attention is traced as a fused kernel (flash / memory-efficient: O(tokens) memory, what
PyTorch's ``scaled_dot_product_attention`` runs on CUDA and on the CPU), not as the math path
that materialises the tokens x tokens matrix (which meta tensors would otherwise take). With
grad on it keeps what that kernel's backward needs: query, key, value, output, log-sum-exp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode


class _Live(TorchDispatchMode):
    """Counts the bytes of the storages created inside the mode that are still referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def _add(self, t: object) -> bool:
        """Register ``t``'s storage; True when it is new (only then can the peak rise)."""
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            key = storage._cdata
            if key not in self.refs:
                self.refs[key] = (StorageWeakRef(storage), storage.nbytes())
                return True
        return False

    def live(self) -> int:
        dead = [k for k, (ref, _) in self.refs.items() if ref.expired()]
        for k in dead:
            del self.refs[k]
        return sum(n for _, n in self.refs.values())

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # An output on an input's storage that the mode has not seen is a view (or an in-place
        # result) of a tensor made before the call: a weight, not an allocation of this op.
        before = {
            t.untyped_storage()._cdata
            for t in pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        allocated = False
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                key = t.untyped_storage()._cdata
                if key in before and key not in self.refs:
                    continue
            allocated |= self._add(t)
        # Inputs are still referenced here: this is the op's own high-water mark. An op that
        # allocated nothing (a view, an in-place op) cannot raise it: no need to sum.
        if allocated:
            self.peak = max(self.peak, self.live())
        return out


class _FusedAttentionFn(torch.autograd.Function):
    """A fused kernel's memory: its output; for the backward pass it saves the query, key,
    value, output and the row log-sum-exp (float32), and returns the three input gradients."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> Any:
        out = query.new_empty((*query.shape[:-1], value.shape[-1]))
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        query, key, value, _out, _lse = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


class _FusedAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` as a fused kernel: its output (and what its backward
    keeps when grad is on), nothing quadratic."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is F.scaled_dot_product_attention:
            query, key, value = args[:3]
            return _FusedAttentionFn.apply(query, key, value)
        return func(*args, **(kwargs or {}))


def trace_peak(fn: Callable[[], Any], keep: bool = False) -> tuple[int, int]:
    """(peak bytes, bytes still held when ``fn`` returns) of the tensors ``fn`` creates.

    ``fn`` must build its inputs on the meta device itself (they count as created: pass the
    bytes of inputs that exist before the call separately). The result of ``fn`` counts as
    held, and so does an autograd graph it returns (the saved tensors of a forward in grad
    mode): that is what a later backward pass needs.
    """
    mode = _Live()
    with _FusedAttention(), mode:
        result = fn()
        held = mode.live()
    peak = mode.peak
    del result
    return peak, held
