"""Int8 weight-only quantization: store each weight matrix as 8-bit integers and one scale per row.

A weight matrix W (out x in) of a Linear layer becomes integers q in [-127, 127] and a float
scale s_i for each output channel (row) i:

    s_i = max_j |W_ij| / 127,      q_ij = round(W_ij / s_i),      W_ij ~ q_ij * s_i

(symmetric quantization with one scale per output channel, as in Jacob et al. 2018, Sec. 2, and
the "vector-wise" scales of Dettmers et al. 2022, Sec. 3). Rounding to the nearest integer moves
each weight by at most half a step: |W_ij - q_ij s_i| <= s_i / 2. A row of zeros gets s_i = 1 and
q = 0 (exact). Only the weights change; activations stay in floating point, and the layer
computes ``(x @ q^T) * s + b``, the scale applied after the matrix product because it is constant
along each output row. So memory shrinks about 4x for the weights, while on a CPU without int8
kernels the speed does not improve: q is converted to float at every call.

The tied matrix: the GPT's token embedding ``wte`` and its output layer ``lm_head`` are one
(V x C) matrix (Press & Wolf 2017). Its rows are the tokens, which are both the output channels
of ``lm_head`` and the vectors ``wte`` looks up, so a per-row scale serves both:
``quantize_model`` quantizes the matrix once and the two modules share the same int8 tensor and
scales, stored once, the tie kept. The position embedding ``wpe`` and the LayerNorms stay in
float (few numbers; LayerNorm gains are sensitive).

``quantize_model`` returns a quantized copy and leaves the model it is given untouched; the GPT
class is not changed (STYLE item 11). Left out on purpose: int8 activations and int8 matrix
products, outlier decomposition (Dettmers et al. 2022, Sec. 3.2), 4-bit formats, calibration
data, quantization-aware training, and saving quantized checkpoints.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

QMAX = 127  # symmetric range [-127, 127]; -128 is unused so that q and -q are both valid


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 values and one float scale per row of a 2-D weight (out, in).

    >>> q, s = quantize_per_channel(torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]]))
    >>> q
    tensor([[  64, -127,   32],
            [   0,    0,    0]], dtype=torch.int8)
    >>> s
    tensor([0.0079, 1.0000])

    Returns:
        q: (out, in) int8; scale: (out,) in the weight's float dtype.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"quantize_per_channel takes a 2-D weight (out, in), got {got}")
    if not weight.is_floating_point():
        raise TypeError(f"the weight must be floating point, got {weight.dtype}")
    if not torch.isfinite(weight).all():
        raise ValueError("the weight holds NaN or infinite values; they cannot be quantized")
    w = weight.detach()
    amax = w.abs().amax(dim=1)  # (out,)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))  # (out,); zero row: 1
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)  # (out, in)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float weight q * s that int8 values and per-row scales stand for: (out, in).

    >>> dequantize(torch.tensor([[64, -127]], dtype=torch.int8), torch.tensor([0.5]))
    tensor([[ 32.0000, -63.5000]])
    """
    return q.to(scale.dtype) * scale[:, None]  # (out, in)


class Int8Linear(nn.Module):
    """A Linear layer whose weight is stored as int8 with one scale per output channel.

    ``forward`` computes ``(x @ q^T) * s + b``; it equals ``F.linear(x, dequantize(q, s), b)``
    up to floating-point rounding.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = q.size(1), q.size(0)
        self.register_buffer("q", q)  # (out, in) int8
        self.register_buffer("scale", scale)  # (out,)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize an ``nn.Linear`` (its weight is not changed)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int8Linear.from_linear takes an nn.Linear, got {type(linear)}")
        q, scale = quantize_per_channel(linear.weight)
        return cls(q, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.q.to(x.dtype)) * self.scale.to(x.dtype)  # (..., out)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows, each with its own scale: row i is q_i * s_i."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = q.shape
        self.register_buffer("q", q)  # (V, C) int8
        self.register_buffer("scale", scale)  # (V,)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(idx, self.q).to(self.scale.dtype)  # (..., C)
        return rows * self.scale[idx][..., None]  # (..., C)


def quantize_model(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` (and a tied embedding) in int8.

    Args:
        model: a ``gptlib.model.GPT`` or any module; it is not modified.
        skip: names of Linear layers to keep in float (``"lm_head"``, ``"h.0.mlp.c_fc"``).
    Returns:
        the quantized copy, in eval mode. An ``nn.Embedding`` whose weight is the weight of a
        quantized Linear (the tied ``wte``/``lm_head``) becomes an ``Int8Embedding`` that shares
        the Linear's int8 tensor and scales; an untied embedding stays in float.
    """
    names = {name for name, _ in model.named_modules()}
    unknown = set(skip) - names
    if unknown:
        raise ValueError(f"skip names modules the model does not have: {sorted(unknown)}")
    out = copy.deepcopy(model).eval()
    done: dict[int, Int8Linear] = {}  # id of a float weight -> the Int8Linear made from it
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.Linear) and name not in skip:
            new = Int8Linear.from_linear(module)
            done[id(module.weight)] = new
            _replace(out, name, new)
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.Embedding) and id(module.weight) in done:
            lin = done[id(module.weight)]
            _replace(out, name, Int8Embedding(lin.q, lin.scale))  # same tensors: tied, stored once
    return out


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and persistent buffers, each shared tensor counted once.

    >>> model_bytes(nn.Linear(4, 2))  # 8 weights + 2 biases, 4 bytes each
    40
    """
    seen, total = set(), 0
    named = list(model.named_parameters(remove_duplicate=False))
    named += list(model.named_buffers(remove_duplicate=False))
    persistent = set(model.state_dict(keep_vars=True))
    for name, t in named:
        if t is None or name not in persistent or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total
