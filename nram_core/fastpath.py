"""How the model computes on CPU and CUDA, never what: the speed machinery around ``model.py``.

``model.py`` builds plain ``nn.Linear``/``nn.Dropout`` layers. ``install(model)`` re-classes them in
place into this module's layer types (the same parameters and state_dict keys), which behave like
the plain ones until a setting turns a fast path on; ``kernels(model, ...)`` sets those settings for
a block. Each setting lives on the layer type that declares it:

* ``Linear.matmul_dtype``: the GEMM, forward and backward, in bf16 with fp32 weights, input and
  output, its rows padded to ``bucketed_rows`` (one autograd function, ``_BucketedLinear``);
  ``FusedSelfAttention`` then projects q, k and v in one product;
* ``Dropout.fast_dropout``: masks drawn from 16-bit random lanes on CPU;
* ``ChunkedNewsEncoder.title_chunk``: titles encoded in length-sorted chunks (``by_length``).

For inference, ``word_table``/``news_table`` project every vocabulary word and every news vector
once (``Projected``), which is exact in eval mode, where a row's projection does not depend on
its context; ``news_from_table``/``users_from_table`` run the encoders' own steps on them.
``matmul_precision``, ``autocast_for`` and ``cuda_precision`` choose the precision per device.

Shapes as in ``model.py``; R rows, P padded key positions.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .model import MultiHeadSelfAttention, NewsEncoder, UserEncoder


# ---- bf16 GEMMs --------------------------------------------------------------------------------
def bucketed_rows(rows: int) -> int:
    """``rows`` rounded up to one of eight sizes per power of two, and to a multiple of 64: at most 63
    rows more below 512, less than 1/8 more above. (Sixteen sizes per power of two measured the
    same speed and a larger kernel cache.)

    >>> [bucketed_rows(n) for n in (1, 64, 65, 1000, 1024, 1025, 3200)]
    [64, 64, 128, 1024, 1024, 1152, 3328]
    """
    step = max(64, 1 << max(0, rows.bit_length() - 4))
    return -(-rows // step) * step


class Linear(nn.Linear):
    """``nn.Linear`` that can multiply in a lower precision while its weights, input and output stay
    fp32: with ``matmul_dtype=torch.bfloat16`` (set by ``kernels``) the GEMM, forward and backward,
    runs in bf16, which CPUs with bf16 dot-product instructions do several times faster than
    fp32. Unlike ``torch.autocast`` nothing else changes dtype (attention, softmax and pooling
    stay fp32).

    The low-precision GEMM sees its rows padded with zeros to ``bucketed_rows``: oneDNN, which runs
    it, compiles and caches a kernel per shape, and a training batch's number of distinct news
    changes every step, so without buckets that cache grew by about 14 MB a step (``paper``
    preset) until it held 1,024 kernels. Padded rows are cut off the output, so they change
    nothing, forward or backward (``tests/test_fastpath.py``). Under ``torch.compile`` the row
    count stays symbolic, so the plain product is traced instead (buckets would pin it and
    recompile for each new count)."""

    matmul_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.matmul_dtype
        if low is None or x.dtype == low:
            return super().forward(x)
        return low_precision_linear(x, self.weight, self.bias, low)[0]


def low_precision_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         low: torch.dtype, parts: int = 1) -> tuple[torch.Tensor, ...]:
    """``F.linear(x, weight, bias).chunk(parts, dim=-1)`` with the GEMM in ``low``, its rows padded
    to ``bucketed_rows`` (see ``Linear``); inputs and outputs keep ``x``'s dtype. ``parts`` > 1 is
    several layers' weights stacked (q, k, v): their products share one conversion of ``x``."""
    if torch.compiler.is_compiling():  # a compiled graph keeps its row count symbolic: no buckets
        out = F.linear(x.to(low), weight.to(low), None if bias is None else bias.to(low))  # [...,in] -> [...,out]
        return out.to(x.dtype).chunk(parts, dim=-1)  # [...,out] -> parts x [...,out/parts]
    return _BucketedLinear.apply(x, weight, bias, low, parts)


class _BucketedLinear(torch.autograd.Function):
    """The GEMMs of ``low_precision_linear``, forward and backward, with one pass per conversion:
    the backward writes the incoming fp32 gradients of all parts into one padded ``low`` buffer
    (what autograd would do in three passes: concatenate, convert, pad)."""

    @staticmethod
    def forward(ctx, x, weight, bias, low, parts):
        rows, width = x.numel() // x.shape[-1], x.shape[-1]
        flat = x.new_empty(bucketed_rows(rows), width, dtype=low)  # [R',in]
        flat[:rows] = x.reshape(rows, width)  # [...,in] -> [R,in], converted in the copy
        flat[rows:] = 0
        low_weight = weight.to(low)  # [out,in]
        out = F.linear(flat, low_weight, None if bias is None else bias.to(low))[:rows]  # [R',in] -> [R,out]
        ctx.save_for_backward(flat, low_weight)
        ctx.shape, ctx.dtypes, ctx.has_bias = x.shape, (x.dtype, weight.dtype), bias is not None
        return tuple(part.to(x.dtype).reshape(*x.shape[:-1], part.shape[-1])
                     for part in out.chunk(parts, dim=-1))  # [R,out] -> parts x [...,out/parts]

    @staticmethod
    def backward(ctx, *grads):
        flat, low_weight = ctx.saved_tensors
        rows = ctx.shape.numel() // ctx.shape[-1]
        step = low_weight.shape[0] // len(grads)
        grad = flat.new_empty(flat.shape[0], low_weight.shape[0])  # [R',out] in low
        for i, part in enumerate(grads):
            block = grad[:rows, i * step:(i + 1) * step]  # [R,out/parts]
            if part is None:
                block.zero_()
            else:
                block.copy_(part.reshape(rows, step))  # [...,out/parts] -> [R,out/parts], converted
        grad[rows:] = 0
        x_dtype, weight_dtype = ctx.dtypes
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ low_weight)[:rows].to(x_dtype).reshape(ctx.shape)  # [R',out]@[out,in] -> [...,in]
        if ctx.needs_input_grad[1]:
            grad_weight = (grad.T @ flat).to(weight_dtype)  # [out,R']@[R',in] -> [out,in]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=0, dtype=weight_dtype)  # [R',out] -> [out]
        return grad_x, grad_weight, grad_bias, None, None


class FusedSelfAttention(MultiHeadSelfAttention):
    """``MultiHeadSelfAttention`` whose q, k and v, in a lower-precision GEMM, are one product, so
    that the input is converted once."""

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layers = (self.q, self.k, self.v)
        # a layer that is not this module's Linear (e.g. a quantised one) has no matmul_dtype: one by one
        lows = {layer.matmul_dtype if isinstance(layer, Linear) else None for layer in layers}
        low = lows.pop() if len(lows) == 1 else None
        if low is None or x.dtype == low:
            return super().project(x)  # [...,E] -> 3 x [...,D]
        weight = torch.cat([layer.weight for layer in layers])  # 3 x [D,E] -> [3D,E]
        bias = None if self.q.bias is None else torch.cat([layer.bias for layer in layers])  # 3 x [D] -> [3D]
        return low_precision_linear(x, weight, bias, low, parts=3)  # [...,E] -> 3 x [...,D]


# ---- dropout -----------------------------------------------------------------------------------
class Dropout(nn.Dropout):
    """``nn.Dropout`` with cheaper random numbers on CPU, where ``F.dropout`` draws one
    ``bernoulli_`` per element (15% of a ``paper`` step) and ``torch.rand_like`` one 32-bit
    draw (12%): here each 64-bit draw gives four 16-bit lanes, and an element is dropped when
    its lane is below ``p`` * 2**16, rounded (so p = 0.2 drops 13107 / 65536 = 0.199997; the
    scale of the kept elements uses that rate, so the expected value is unchanged). Other
    devices, and ``fast_dropout = False`` (set by ``kernels``), keep ``F.dropout``."""

    fast_dropout: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not x.is_cpu or not self.fast_dropout:
            return super().forward(x)
        threshold = round(self.p * 65536)  # dropped lanes out of 2**16
        if threshold >= 65536:
            return x * 0.0
        draws = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)  # [n/4]
        draws.random_(-(1 << 63), None)  # every 64-bit value equally likely
        lanes = draws.view(torch.int16)[: x.numel()].view(x.shape)  # [n/4] -> [4n/4] -> [...] uniform int16
        keep = lanes >= threshold - 32768  # [...] bool: the lane as unsigned is >= threshold
        return x * keep.to(x.dtype).mul_(65536 / (65536 - threshold))  # one product forward, one backward


# ---- length-sorted chunks ----------------------------------------------------------------------
def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    """Per row of a [N,L] mask, one past its last True (0 for an empty row): [N] int64.

    >>> lengths_of(torch.tensor([[True, True, False], [True, False, True], [False, False, False]])).tolist()
    [2, 3, 0]
    """
    if mask.shape[-1] == 0:
        return torch.zeros(mask.shape[:-1], dtype=torch.long, device=mask.device)  # [N]
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)  # [L]
    return (mask.long() * positions).amax(dim=-1)  # [N,L] -> [N]


def by_length(lengths: torch.Tensor, chunk: int, encode: Callable[[torch.Tensor, int], torch.Tensor], *,
              equal_lengths: bool = False, min_rows: int = 1) -> torch.Tensor:
    """``encode(rows, width)`` -> [b,D] over chunks of ``chunk`` rows sorted by ``lengths`` [R],
    each chunk cut to its longest (at least 1), put back in row order: [R,D]. Padding columns
    would cost work and change nothing, since padding is masked out everywhere.

    ``equal_lengths``: a chunk never mixes two lengths, so that every row of a chunk fills its
    width and the attention needs no mask (see ``MultiHeadSelfAttention.attend``); except that
    lengths with fewer than ``min_rows`` rows join the next ones until a chunk has that many,
    since a call costs more than a few padding columns (in inference each call runs about
    twenty small kernels).

    >>> seen = []
    >>> _ = by_length(torch.tensor([3, 1, 3, 2]), 8, lambda rows, w: seen.append(w) or torch.zeros(len(rows), 1))
    >>> _ = by_length(torch.tensor([3, 1, 3, 2]), 8, lambda rows, w: seen.append(w) or torch.zeros(len(rows), 1),
    ...               equal_lengths=True)
    >>> _ = by_length(torch.tensor([3, 1, 3, 2]), 8, lambda rows, w: seen.append(w) or torch.zeros(len(rows), 1),
    ...               equal_lengths=True, min_rows=2)
    >>> seen
    [3, 1, 2, 3, 2, 3]
    """
    order = torch.argsort(lengths, stable=True)  # [R] short first
    if equal_lengths:
        runs, pending = [], 0
        for count in torch.unique_consecutive(lengths[order], return_counts=True)[1].tolist():
            pending += count
            if pending >= min_rows:
                runs.append(pending)
                pending = 0
        if pending:
            runs.append(pending)
        groups = [rows for run in order.split(runs) for rows in run.split(chunk)]
    else:
        groups = list(order.split(chunk))
    parts = [encode(rows, max(1, int(lengths[rows].max()))) for rows in groups]  # each [b,D]
    return torch.cat(parts)[torch.argsort(order)]  # [R,D] in length order -> row order


class ChunkedNewsEncoder(NewsEncoder):
    """``NewsEncoder`` that, with ``title_chunk`` > 0 (set by ``kernels``), encodes titles in
    length-sorted chunks of that many, each cut to its longest title (``by_length``)."""

    title_chunk: int = 0

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False,
                categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None):
        if not self.title_chunk or need_weights or mask is not None or len(tokens) <= self.title_chunk:
            return super().forward(tokens, mask, need_weights, categories, subcategories)

        def encode(rows: torch.Tensor, width: int) -> torch.Tensor:
            cats = (categories[rows], subcategories[rows]) if categories is not None else (None, None)  # [n] each
            return NewsEncoder.forward(self, tokens[rows, :width], categories=cats[0],
                                       subcategories=cats[1])[0]  # [n,width] -> [n,D]

        return by_length(lengths_of(tokens != 0), self.title_chunk, encode), None  # [N,L] -> [N,D]


# ---- the settings ------------------------------------------------------------------------------
FAST_LAYERS: dict[type, type] = {nn.Linear: Linear, nn.Dropout: Dropout, MultiHeadSelfAttention: FusedSelfAttention,
                                 NewsEncoder: ChunkedNewsEncoder}


def install(model: nn.Module) -> nn.Module:
    """Re-class, in place, every module of ``model`` whose exact type has a fast counterpart in
    ``FAST_LAYERS`` (a subclass, e.g. a quantised layer, is left alone). Parameters and state_dict
    keys are unchanged, and so is what the layers compute until ``kernels`` turns a setting on
    (except ``Dropout``, which draws its masks the fast way unless ``fast_dropout`` is False)."""
    for module in model.modules():
        fast = FAST_LAYERS.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return model


_KEEP: Any = object()  # a ``kernels`` setting left as it is


@contextlib.contextmanager
def kernels(model: nn.Module, *, matmul_dtype: torch.dtype | None = _KEEP,
            title_chunk: int = _KEEP, fast_dropout: bool = _KEEP) -> Iterator[None]:
    """Within the block, every ``Linear`` of ``model`` multiplies in ``matmul_dtype`` (None: its
    input's dtype), news encoders encode titles in length-sorted chunks of ``title_chunk``
    (0: all at once, cut to the longest title) and every ``Dropout`` draws its masks the fast
    way or not (``fast_dropout``): each setting goes to the modules whose type declares it, after
    ``install``. A setting not passed stays as it is; the previous settings come back after."""
    install(model)
    settings = {name: value for name, value in (("matmul_dtype", matmul_dtype), ("title_chunk", title_chunk),
                                                 ("fast_dropout", fast_dropout)) if value is not _KEEP}
    changed = [(m, name, value, getattr(m, name)) for m in model.modules() for name, value in settings.items()
               if hasattr(type(m), name)]
    try:
        for m, name, value, _ in changed:
            setattr(m, name, value)
        yield
    finally:
        for m, name, _, before in changed:
            setattr(m, name, before)


# ---- precision per device ----------------------------------------------------------------------
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (avx512_bf16 or AMX tiles). CPUs that
    only convert bf16 (plain AVX-512) emulate its GEMMs, several times slower than fp32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(bool(probe()) for probe in probes if callable(probe))


def matmul_precision(device: torch.device, amp: bool) -> tuple[torch.dtype | None, str]:
    """(dtype for the Linear layers' GEMMs, or None for their input's; a one-line description).

    On CUDA ``amp`` is autocast (``autocast_for``), so the layers need no dtype. On a CPU, bf16
    GEMMs only where the CPU has native bf16: emulated, they are slower than fp32."""
    if not amp:
        return None, "fp32"
    if device.type == "cuda":
        return None, "bf16 autocast + TF32"
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16, "bf16 matmuls, fp32 weights"
    return None, f"fp32 (amp asked, but this {device.type} has no native bf16 matmuls)"


@contextlib.contextmanager
def autocast_for(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on CUDA when ``enabled``; nothing on other devices."""
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"):
        yield


@contextlib.contextmanager
def cuda_precision(device: torch.device, amp: bool) -> Iterator[None]:
    """TF32 matmuls on CUDA while ``amp`` training runs; the previous settings come back after."""
    if device.type != "cuda" or not amp:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class StepKernels:
    """How every training step computes: ``RuntimeConfig.amp``/``title_chunk``/``fast_dropout`` on
    ``device`` (``precision`` says which GEMMs that gave, in one line)."""

    device: torch.device
    amp: bool
    matmul_dtype: torch.dtype | None
    title_chunk: int
    fast_dropout: bool
    precision: str

    @classmethod
    def choose(cls, device: torch.device, *, amp: bool, title_chunk: int, fast_dropout: bool,
               compiled: bool) -> StepKernels:
        matmul_dtype, precision = matmul_precision(device, amp)
        # Chunks cost a host sync each on an accelerator and a graph break under torch.compile.
        chunk = title_chunk if device.type == "cpu" and not compiled else 0
        return cls(device=device, amp=amp, matmul_dtype=matmul_dtype, title_chunk=chunk,
                   fast_dropout=fast_dropout, precision=precision)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        with autocast_for(self.device, self.amp), kernels(model, matmul_dtype=self.matmul_dtype,
                                                          title_chunk=self.title_chunk,
                                                          fast_dropout=self.fast_dropout):
            yield


# ---- projection tables, for inference ----------------------------------------------------------
KEY_MULTIPLE = {"AVX512": 16}  # CPU capability -> key lengths its fused attention kernel runs fastest at


def key_width(length: int, device: torch.device) -> int:
    """How many key positions the fused attention should see for ``length`` real ones. PyTorch's
    CPU kernel is up to twice as fast per title when the key length is a multiple of its vector
    width (16 floats with AVX-512, docs/benchmarks.md), so on such CPUs keys are padded up to the
    next multiple when that adds at most half a vector (more padding costs more than it saves).

    >>> [key_width(n, torch.device("meta")) for n in (5, 12, 16)]
    [5, 12, 16]
    """
    multiple = KEY_MULTIPLE.get(torch.backends.cpu.get_cpu_capability(), 0) if device.type == "cpu" else 0
    if not multiple or length == 0:
        return length
    width = -(-length // multiple) * multiple
    return width if width - length <= multiple // 2 else length


@dataclass(frozen=True)
class Projected:
    """Rows and their self-attention projections, for inference: every vocabulary word (the news
    encoder's table) or every news vector (the user encoder's). Gathering them gives what the
    encoder would compute for those rows, without its Linear layers."""

    rows: torch.Tensor  # [R,E]
    qkv: torch.Tensor  # [R,3D] queries, keys and values side by side

    def project(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v) of the rows at ``index`` [...]: 3 x [...,D] (views of one gather)."""
        return self.qkv[index].chunk(3, dim=-1)  # [...] -> [...,3D] -> 3 x [...,D]

    def attention_inputs(self, index: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(q, k, v, key_mask) for ``MultiHeadSelfAttention.attend`` of the rows at ``index`` [B,S]
        with ``mask`` [B,S]: q is [B,S,D]; k and v are [B,P,D] and ``key_mask`` [B,P], where the
        P - S positions past the end are masked (``key_width``)."""
        width = key_width(index.shape[-1], index.device)
        if width == index.shape[-1]:
            return (*self.project(index), mask)
        padded = F.pad(index, (0, width - index.shape[-1]))  # [B,S] -> [B,P] (row 0, masked below)
        dim = self.qkv.shape[-1] // 3
        queries = self.qkv[:, :dim][index]  # [B,S] -> [B,S,D]
        keys, values = self.qkv[:, dim:][padded].chunk(2, dim=-1)  # [B,P] -> [B,P,2D] -> 2 x [B,P,D]
        return queries, keys, values, F.pad(mask, (0, width - index.shape[-1]), value=False)  # [B,P]


def _table(encoder: nn.Module, rows: torch.Tensor) -> Projected | None:
    if encoder.self_attention is None:
        return None
    if encoder.training:
        raise RuntimeError("projection tables are for inference: call model.eval() first (dropout)")
    return Projected(rows, torch.cat(encoder.self_attention.project(rows), dim=-1))  # [R,E] -> [R,3D]


def word_table(encoder: NewsEncoder) -> Projected | None:
    """Every vocabulary word's embedding and self-attention projections ([V,E], [V,3D]), for
    ``news_from_table``; None for an encoder without self-attention."""
    return _table(encoder, encoder.embedding.weight)


def news_table(encoder: UserEncoder, news_vectors: torch.Tensor) -> Projected | None:
    """``news_vectors`` [N,D] and their user-encoder projections, for ``users_from_table``; None
    for an encoder without self-attention (``encode_users`` then costs no Linear per click)."""
    return _table(encoder, news_vectors)


def news_from_table(encoder: NewsEncoder, words: Projected, tokens: torch.Tensor,
                    categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None) -> torch.Tensor:
    """``encoder``'s news vectors [N,D] of titles ``tokens`` [N,L], from ``word_table(encoder)``."""
    if encoder.training:
        raise RuntimeError("a word table is for inference: call model.eval() first (dropout)")
    mask = tokens != 0  # [N,L]
    embedded = words.rows[tokens] if encoder.residual else None  # [N,L] -> [N,L,E], only for the residual
    context, _ = encoder.contextualise(embedded, mask, qkv=words.attention_inputs(tokens, mask))  # [N,L,D]
    return encoder.pool(context, mask, categories=categories, subcategories=subcategories)[0]  # [N,L,D] -> [N,D]


def users_from_table(encoder: UserEncoder, news: Projected, history: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """``encoder``'s user vectors [B,D] of ``history`` [B,H] rows of ``news`` (``news_table``), ``mask`` [B,H]."""
    clicked = news.rows[history] if encoder.residual else None  # [B,H] -> [B,H,D], only for the residual
    context, _ = encoder.contextualise(clicked, mask, qkv=news.attention_inputs(history, mask))  # [B,H,D]
    return encoder.pool(context, mask)[0]  # [B,H,D] -> [B,D]
