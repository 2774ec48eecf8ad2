"""The NRAM model: an NRMS-style news recommender built from two attention layers.

News encoder: word embeddings -> multi-head self-attention -> additive attention.
User encoder: multi-head self-attention over clicked-news vectors -> additive attention.
Click score: inner product of the user vector and the candidate news vector.

Every attention module returns ``(output, weights)``; weights are ``None`` unless asked
for, in which case the explicit (non-fused) path runs so that they can be returned.
Masks are boolean, True where a position is real, and padding never receives attention.

Shapes: B batch, L title length, H history length, C candidates, N news, E word dim,
h heads, d head dim, D = h*d news/user dim, Q additive query dim, V vocabulary.

How the encoders compute (never what) is set per call site with ``kernels(model, ...)``:
bf16 matmuls in the Linear layers, and titles encoded in length-sorted chunks. For inference,
``NRAM.word_table`` and ``NRAM.news_table`` project every vocabulary word and every news
vector once (``Projected``), which is exact in eval mode, where a row's projection does not
depend on its context.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is False gets exactly zero weight.

    A row with no valid entry (an empty title or a cold user's history) would be
    ``softmax([-inf, ...]) = NaN``; it is given all-zero weights instead, and no NaN
    reaches the gradient because the -inf fill is skipped on such rows.
    """
    has_any = mask.any(dim=dim, keepdim=True)
    fill_mask = mask | ~has_any  # empty rows keep finite scores; their weights are zeroed below
    weights = scores.masked_fill(~fill_mask, float("-inf")).softmax(dim=dim)
    return weights.masked_fill(~has_any, 0.0)


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


class Dropout(nn.Dropout):
    """``nn.Dropout`` with cheaper random numbers on CPU, where ``F.dropout`` draws one
    ``bernoulli_`` per element (15% of a ``paper`` step) and ``torch.rand_like`` one 32-bit
    draw (12%): here each 64-bit draw gives four 16-bit lanes, and an element is dropped when
    its lane is below ``p`` * 2**16, rounded (so p = 0.2 drops 13107 / 65536 = 0.199997; the
    scale of the kept elements uses that rate, so the expected value is unchanged). Other
    devices, and ``fast = False`` (set by ``kernels``), keep ``F.dropout``."""

    fast: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not x.is_cpu or not self.fast:
            return super().forward(x)
        threshold = round(self.p * 65536)  # dropped lanes out of 2**16
        if threshold >= 65536:
            return x * 0.0
        draws = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)  # [n/4]
        draws.random_(-(1 << 63), None)  # every 64-bit value equally likely
        lanes = draws.view(torch.int16)[: x.numel()].view(x.shape)  # [n/4] -> [4n/4] -> [...] uniform int16
        keep = lanes >= threshold - 32768  # [...] bool: the lane as unsigned is >= threshold
        return x * keep.to(x.dtype).mul_(65536 / (65536 - threshold))  # one product forward, one backward


_KEEP: Any = object()  # a ``kernels`` setting left as it is


@contextlib.contextmanager
def kernels(model: nn.Module, *, matmul_dtype: torch.dtype | None = _KEEP,
            title_chunk: int = _KEEP, fast_dropout: bool = _KEEP) -> Iterator[None]:
    """Within the block, every ``Linear`` of ``model`` multiplies in ``matmul_dtype`` (None: its
    input's dtype), NRAM models encode titles in length-sorted chunks of ``title_chunk``
    (0: all at once, cut to the longest title) and every ``Dropout`` draws its masks the fast
    way or not (``fast_dropout``). A setting not passed stays as it is; the previous settings
    come back after the block."""
    settings = [(Linear, "matmul_dtype", matmul_dtype), (NRAM, "title_chunk", title_chunk),
                (Dropout, "fast", fast_dropout)]
    changed = [(m, name, value, getattr(m, name)) for kind, name, value in settings if value is not _KEEP
               for m in model.modules() if isinstance(m, kind)]
    try:
        for m, name, value, _ in changed:
            setattr(m, name, value)
        yield
    finally:
        for m, name, _, before in changed:
            setattr(m, name, before)


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

    def attention_inputs(self, index: torch.Tensor, mask: torch.Tensor, *,
                         pad_keys: bool = True) -> tuple[torch.Tensor, ...]:
        """(q, k, v, key_mask) for ``MultiHeadSelfAttention.attend`` of the rows at ``index`` [B,S]
        with ``mask`` [B,S]: q is [B,S,D]; k and v are [B,P,D] and ``key_mask`` [B,P], where the
        P - S positions past the end are masked (``key_width``; P = S without ``pad_keys``)."""
        width = key_width(index.shape[-1], index.device) if pad_keys else index.shape[-1]
        if width == index.shape[-1]:
            return (*self.project(index), mask)
        padded = F.pad(index, (0, width - index.shape[-1]))  # [B,S] -> [B,P] (row 0, masked below)
        dim = self.qkv.shape[-1] // 3
        queries = self.qkv[:, :dim][index]  # [B,S] -> [B,S,D]
        keys, values = self.qkv[:, dim:][padded].chunk(2, dim=-1)  # [B,P] -> [B,P,2D] -> 2 x [B,P,D]
        return queries, keys, values, F.pad(mask, (0, width - index.shape[-1]), value=False)  # [B,P]


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


class AdditiveAttention(nn.Module):
    """Pool a sequence into one vector: a_i = softmax_i(q . tanh(W x_i + b))."""

    def __init__(self, *, input_dim: int, query_dim: int):
        super().__init__()
        self.proj = Linear(input_dim, query_dim)
        self.query = nn.Parameter(torch.empty(query_dim).uniform_(-0.1, 0.1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        scores = torch.tanh(self.proj(x)) @ self.query  # [B,S,D] -> [B,S]
        weights = masked_softmax(scores, mask)  # [B,S]
        pooled = torch.bmm(weights.unsqueeze(1), x).squeeze(1)  # [B,1,S]@[B,S,D] -> [B,D]
        return pooled, (weights if need_weights else None)


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention with ``num_heads`` heads and no output projection (as NRMS)."""

    def __init__(self, *, input_dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q = Linear(input_dim, num_heads * head_dim)
        self.k = Linear(input_dim, num_heads * head_dim)
        self.v = Linear(input_dim, num_heads * head_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # [B,S,h*d] -> [B,h,S,d]

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of each position: [...,E] -> 3 x [...,D]. In a lower-precision
        GEMM the three are one product, so that the input is converted once."""
        layers = (self.q, self.k, self.v)
        # a quantised copy (bench.candidates) swaps in other layer types: they run one by one
        lows = {layer.matmul_dtype if isinstance(layer, Linear) else None for layer in layers}
        low = lows.pop() if len(lows) == 1 else None
        if low is None or x.dtype == low:
            return self.q(x), self.k(x), self.v(x)
        weight = torch.cat([layer.weight for layer in layers])  # 3 x [D,E] -> [3D,E]
        bias = None if self.q.bias is None else torch.cat([layer.bias for layer in layers])  # 3 x [D] -> [3D]
        return low_precision_linear(x, weight, bias, low, parts=3)  # [...,E] -> 3 x [...,D]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False):
        return self.attend(*self.project(x), mask, need_weights)  # [B,S,E] -> [B,S,D]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               need_weights: bool = False):
        """Self-attention from projected positions, each [B,S,D]; ``mask`` [B,S]."""
        q = self._split_heads(q)  # [B,S,D] -> [B,h,S,d]
        k = self._split_heads(k)  # [B,S,D] -> [B,h,S,d]
        v = self._split_heads(v)  # [B,S,D] -> [B,h,S,d]
        key_mask = mask[:, None, None, :]  # [B,S] -> [B,1,1,S]
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B,h,S,d]@[B,h,d,S] -> [B,h,S,S]
            weights = masked_softmax(scores, key_mask.expand_as(scores))  # [B,h,S,S]
            out = weights @ v  # [B,h,S,S]@[B,h,S,d] -> [B,h,S,d]
        else:
            # Fused kernel. An all-padding row may see its (zero) padding keys so that it stays
            # finite; its output is never used, because every pooling step masks it out. In
            # inference a batch without padding (``by_length(equal_lengths=True)``) goes without a
            # mask, which the CPU kernel runs about twice as fast; the weights are the same.
            if not self.training and not torch.compiler.is_compiling() and bool(mask.all()):
                safe_mask = None
            else:
                safe_mask = key_mask | ~mask.any(dim=-1)[:, None, None, None]  # [B,1,1,S]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask)  # [B,h,S,d]
        batch, _, seq, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)  # [B,h,S,d] -> [B,S,D]
        return out, weights


@dataclass(frozen=True)
class EncoderAttention:
    """The attention weights of one encoder call: self-attention per head, then additive pooling."""

    self_attention: torch.Tensor | None  # [B,h,S,S]; None when the model has no self-attention
    pooling: torch.Tensor  # [B,S]
    views: torch.Tensor | None = None  # [B,3] title/category/subcategory weights (use_categories only)


class NewsEncoder(nn.Module):
    """Title tokens (and, with ``use_categories``, category ids) -> news vector."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=config.embedding_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.dropout = Dropout(config.dropout)
        self.self_attention = MultiHeadSelfAttention(
            input_dim=config.word_dim, num_heads=config.num_heads, head_dim=config.head_dim
        ) if config.self_attention else None
        self.residual = config.residual
        self.pooling = AdditiveAttention(input_dim=config.news_dim, query_dim=config.query_dim)
        self.use_categories = config.use_categories
        if config.use_categories:  # id 0 is the unknown category: a zero vector that the view pooling masks out
            self.category_embedding = nn.Embedding(config.num_categories, config.news_dim, padding_idx=0)
            self.subcategory_embedding = nn.Embedding(config.num_subcategories, config.news_dim, padding_idx=0)
            self.view_pooling = AdditiveAttention(input_dim=config.news_dim, query_dim=config.query_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False,
                categories: torch.Tensor | None = None, subcategories: torch.Tensor | None = None,
                words: Projected | None = None):
        """``tokens`` [N,L] int; ``mask`` [N,L] bool, by default ``tokens != 0``; ``categories`` and
        ``subcategories`` [N] ids of the train split's category vocabulary (``use_categories`` only);
        ``words``: the vocabulary's projections (``NRAM.word_table``, eval mode only)."""
        if mask is None:
            mask = tokens != 0  # [N,L]
        if words is not None:  # the table exists only for a model with self-attention
            if self.training:
                raise RuntimeError("a word table is for inference: call model.eval() first (dropout)")
            *projected, key_mask = words.attention_inputs(tokens, mask, pad_keys=not need_weights)  # 3 x [N,L|P,D]
            embedded = words.rows[tokens] if self.residual else None  # [N,L] -> [N,L,E]
        else:
            embedded = self.dropout(self.embedding(tokens))  # [N,L] -> [N,L,E]
        if self.self_attention is not None:
            if words is not None:
                context, self_weights = self.self_attention.attend(*projected, key_mask, need_weights)  # [N,L,D]
            else:
                context, self_weights = self.self_attention(embedded, mask, need_weights)  # [N,L,E] -> [N,L,D]
            context = self.dropout(context)
            if self.residual:
                context = embedded + context  # [N,L,D], D == E
        else:
            context, self_weights = embedded, None  # D == E
        news, word_weights = self.pooling(context, mask, need_weights)  # [N,L,D] -> [N,D]
        view_weights = None
        if self.use_categories:
            if categories is None or subcategories is None:
                raise ValueError("this model fuses categories: pass the news' category and subcategory ids")
            views = torch.stack([news, self.category_embedding(categories),
                                 self.subcategory_embedding(subcategories)], dim=1)  # 3 x [N,D] -> [N,3,D]
            view_mask = torch.stack([torch.ones_like(categories, dtype=torch.bool), categories != 0,
                                     subcategories != 0], dim=1)  # [N,3]
            news, view_weights = self.view_pooling(views, view_mask, need_weights)  # [N,3,D] -> [N,D]
        return news, (EncoderAttention(self_weights, word_weights, view_weights) if need_weights else None)


class UserEncoder(nn.Module):
    """Clicked-news vectors -> user vector."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attention = MultiHeadSelfAttention(
            input_dim=config.news_dim, num_heads=config.num_heads, head_dim=config.head_dim
        ) if config.self_attention else None
        self.dropout = Dropout(config.dropout)
        self.residual = config.residual
        self.pooling = AdditiveAttention(input_dim=config.news_dim, query_dim=config.query_dim)

    def contextualise(self, clicked: torch.Tensor, mask: torch.Tensor, need_weights: bool = False,
                      projected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                      key_mask: torch.Tensor | None = None):
        """Self-attention over the clicks: [B,H,D] -> [B,H,D] (the h_i that the pooling weighs).
        Without self-attention the clicked-news vectors themselves are the h_i (weights None).
        ``projected``: the clicks' (q, k, v), when gathered from ``NRAM.news_table``; ``clicked``
        may then be None unless the model has a residual. ``key_mask`` [B,P]: the keys' mask when
        k and v are padded past the clicks (``Projected.attention_inputs``); else ``mask``."""
        if self.self_attention is None:
            return clicked, None
        if projected is not None:
            keys = mask if key_mask is None else key_mask  # [B,H] or [B,P]
            context, weights = self.self_attention.attend(*projected, keys, need_weights)  # [B,H,D]
        else:
            context, weights = self.self_attention(clicked, mask, need_weights)  # [B,H,D]
        context = self.dropout(context)
        return (clicked + context if self.residual else context), weights

    def forward(self, clicked: torch.Tensor, mask: torch.Tensor, need_weights: bool = False,
                projected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                key_mask: torch.Tensor | None = None):
        """``clicked`` [B,H,D] news vectors, ``mask`` [B,H] bool. An empty history gives a zero vector."""
        context, self_weights = self.contextualise(clicked, mask, need_weights, projected, key_mask)  # [B,H,D]
        user, click_weights = self.pooling(context, mask, need_weights)  # [B,H,D] -> [B,D]
        return user, (EncoderAttention(self_weights, click_weights) if need_weights else None)


def glorot_init(module: nn.Module) -> None:
    """The reference NRMS initialisation: Glorot-uniform dense weights and additive-attention
    queries (a [Q,1] matrix there), zero biases. Embeddings keep their own initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, AdditiveAttention):
            bound = math.sqrt(6.0 / (layer.query.numel() + 1))
            nn.init.uniform_(layer.query, -bound, bound)


@dataclass(frozen=True)
class Explanation:
    """Everything the model attended to for one user and a set of candidates (NumPy, on CPU).

    ``scores[c] == contributions[c].sum()`` because the user vector is the weighted sum
    ``u = sum_i click_weights[i] * h_i``, so ``u . n_c = sum_i click_weights[i] * (h_i . n_c)``.
    """

    history_word_weights: np.ndarray  # [H,L] additive attention over each clicked title's words
    history_self_attention: np.ndarray  # [H,h,L,L]
    candidate_word_weights: np.ndarray  # [C,L]
    candidate_self_attention: np.ndarray  # [C,h,L,L]
    click_weights: np.ndarray  # [H] additive attention of the user encoder over the clicks
    click_self_attention: np.ndarray  # [h,H,H]
    contributions: np.ndarray  # [C,H] per-click share of each candidate's score
    scores: np.ndarray  # [C]
    history_view_weights: np.ndarray  # [H,3] title/category/subcategory pooling ([0] without use_categories)
    candidate_view_weights: np.ndarray  # [C,3]


class NRAM(nn.Module):
    title_chunk: int = 0  # set by ``kernels``: > 0 encodes titles in length-sorted chunks of this many

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size < 2:
            raise ValueError("ModelConfig.vocab_size must come from the data's vocabulary (>= 2)")
        config.validate()
        self.config = config
        self.news_encoder = NewsEncoder(config)
        self.user_encoder = UserEncoder(config)
        if config.init == "glorot":
            glorot_init(self)

    def encode_news(self, titles: torch.Tensor, categories: torch.Tensor | None = None,
                    subcategories: torch.Tensor | None = None, *, words: Projected | None = None) -> torch.Tensor:
        """[N,L] tokens (plus [N] category ids when ``use_categories``) -> [N,D] news vectors.
        ``words``: ``word_table()``, for inference. With ``title_chunk`` (see ``kernels``) the titles
        go through the encoder in chunks of similar length, each cut to its longest title: padding
        columns would cost work and change nothing, since padding is masked out everywhere."""
        if not self.title_chunk or len(titles) <= self.title_chunk:
            return self.news_encoder(titles, categories=categories, subcategories=subcategories, words=words)[0]

        def encode(rows: torch.Tensor, width: int) -> torch.Tensor:
            cats = (categories[rows], subcategories[rows]) if categories is not None else (None, None)  # [n] each
            return self.news_encoder(titles[rows, :width], categories=cats[0], subcategories=cats[1],
                                     words=words)[0]  # [n,width] -> [n,D]

        return by_length(lengths_of(titles != 0), self.title_chunk, encode)  # [N,L] -> [N,D]

    def encode_users(self, clicked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B,H,D] clicked-news vectors, [B,H] mask -> [B,D] user vectors."""
        return self.user_encoder(clicked, mask)[0]

    def encode_histories(self, history: torch.Tensor, mask: torch.Tensor, news: Projected) -> torch.Tensor:
        """[B,H] rows of ``news`` (``news_table``), [B,H] mask -> [B,D] user vectors, for inference."""
        clicked = news.rows[history] if self.user_encoder.residual else None  # [B,H] -> [B,H,D]
        *projected, key_mask = news.attention_inputs(history, mask)  # [B,H] -> 3 x [B,H|P,D], [B,P]
        return self.user_encoder(clicked, mask, projected=projected, key_mask=key_mask)[0]  # [B,D]

    def _table(self, rows: torch.Tensor, attention: MultiHeadSelfAttention | None) -> Projected | None:
        if attention is None:
            return None
        if self.training:
            raise RuntimeError("projection tables are for inference: call model.eval() first (dropout)")
        return Projected(rows, torch.cat(attention.project(rows), dim=-1))  # [R,E] -> [R,3D]

    def word_table(self) -> Projected | None:
        """Every vocabulary word's embedding and self-attention projections ([V,E], 3 x [V,D]), for
        ``encode_news(words=...)``; None for a model without self-attention."""
        return self._table(self.news_encoder.embedding.weight, self.news_encoder.self_attention)

    def news_table(self, news_vectors: torch.Tensor) -> Projected | None:
        """``news_vectors`` [N,D] and their user-encoder projections, for ``encode_histories``;
        None for a model without self-attention (``encode_users`` then costs no Linear per click)."""
        return self._table(news_vectors, self.user_encoder.self_attention)

    def forward(
        self,
        titles: torch.Tensor,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        candidates: torch.Tensor,
        categories: torch.Tensor | None = None,
        subcategories: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits for a batch.

        ``titles`` [U,L] holds the tokens of the batch's unique news, each encoded once;
        ``history`` [B,H] and ``candidates`` [B,C] index rows of ``titles``; ``categories`` and
        ``subcategories`` [U] are needed only with ``use_categories``.
        """
        news = self.encode_news(titles, categories, subcategories)  # [U,L] -> [U,D]
        user = self.encode_users(news[history], history_mask)  # [B,H] -> [B,H,D] -> [B,D]
        return (news[candidates] @ user.unsqueeze(-1)).squeeze(-1)  # [B,C,D]@[B,D,1] -> [B,C]

    def score_batch(self, batch) -> torch.Tensor:
        """Logits [B,C] of a ``nram_core.data.batching.Batch``. With ``use_categories`` the batch's
        category ids must be those of the train split's category vocabulary (see
        ``nram_core.data.split.align_categories``), not the per-split ids."""
        if self.config.use_categories:
            return self(batch.titles, batch.history, batch.history_mask, batch.candidates,
                        batch.categories, batch.subcategories)
        return self(batch.titles, batch.history, batch.history_mask, batch.candidates)

    @torch.no_grad()
    def explain(self, history_titles: torch.Tensor, candidate_titles: torch.Tensor, *,
                history_categories: tuple[torch.Tensor, torch.Tensor] | None = None,
                candidate_categories: tuple[torch.Tensor, torch.Tensor] | None = None) -> Explanation:
        """Attention and score decomposition for one user (``history_titles`` [H,L]) and candidates [C,L].

        With ``use_categories``, ``*_categories`` are the news' (category ids, subcategory ids), [H] or [C]
        each. Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            hist_cat, hist_sub = history_categories or (None, None)
            cand_cat, cand_sub = candidate_categories or (None, None)
            hist_vecs, hist_att = self.news_encoder(history_titles, need_weights=True, categories=hist_cat,
                                                    subcategories=hist_sub)  # [H,L] -> [H,D]
            cand_vecs, cand_att = self.news_encoder(candidate_titles, need_weights=True, categories=cand_cat,
                                                    subcategories=cand_sub)  # [C,L] -> [C,D]
            mask = torch.ones(1, hist_vecs.shape[0], dtype=torch.bool, device=hist_vecs.device)  # [1,H]
            context, click_self = self.user_encoder.contextualise(hist_vecs.unsqueeze(0), mask, True)  # [1,H,D]
            user, click_pool = self.user_encoder.pooling(context, mask, True)  # [1,H,D] -> [1,D]
            per_click = cand_vecs @ context[0].T  # [C,D]@[D,H] -> [C,H]
            contributions = per_click * click_pool[0]  # [C,H]
            scores = cand_vecs @ user[0]  # [C,D]@[D] -> [C]
        finally:
            self.train(was_training)

        def cpu(t: torch.Tensor | None) -> np.ndarray:
            if t is None:  # a model without self-attention has no self-attention weights
                return np.zeros((0,), dtype=np.float32)
            return t.detach().float().cpu().numpy()

        return Explanation(
            history_word_weights=cpu(hist_att.pooling),
            history_self_attention=cpu(hist_att.self_attention),
            candidate_word_weights=cpu(cand_att.pooling),
            candidate_self_attention=cpu(cand_att.self_attention),
            click_weights=cpu(click_pool[0]),
            click_self_attention=cpu(click_self[0] if click_self is not None else None),
            contributions=cpu(contributions),
            scores=cpu(scores),
            history_view_weights=cpu(hist_att.views),
            candidate_view_weights=cpu(cand_att.views),
        )
