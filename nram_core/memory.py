"""A memory budget checked from shapes and dtypes before any tensor exists.

The config caps (``config.MAX_*``) bound each field alone; their product can still ask for more
than the machine has (a ``batch_size`` of 10^7, or a run folder whose config and weights header
agree on a vocabulary of 10^9 words). Those are refused here, in one line that names the settings,
instead of ending in a MemoryError, the OOM killer or a swapping machine. The estimates count the
dominant terms generously (every title of a batch encoded apart, no chunking), so they are meant to
refuse sizes out of any machine's reach, not to predict the peak of a run that is merely large.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

from .config import ModelConfig, RuntimeConfig, TrainConfig
from .fileio import DataError

FLOAT_BYTES = 4
# Per title position, the training step keeps the forward activations for backward and makes their
# gradients: about three copies of each.
AUTOGRAD_COPIES = 3
STEP_SETTINGS = ("batch_size", "negatives", "history_len", "title_len", "word_dim", "num_heads", "head_dim")
EVAL_SETTINGS = ("eval_batch_size", "history_len", "title_len", "word_dim", "num_heads", "head_dim")


def machine_memory() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


class _SkipInit(TorchFunctionMode):
    """Turns ``torch.nn.init``'s functions into no-ops: a module built for its shapes needs no values."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else next(iter((kwargs or {}).values()))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build modules on the meta device, for their shapes and sizes: no memory is allocated and no
    initialisation runs (initialising a meta tensor goes through PyTorch's Python reference kernels,
    whose first call imports the compiler stack, ``torch._dynamo``: a second of every command's
    start-up, spent on values nobody reads).

    >>> with shapes_only():
    ...     layer = torch.nn.Linear(10**6, 10**4)  # 40 GB if it were real
    >>> layer.weight.device.type, parameter_bytes(layer) // 10**9
    ('meta', 40)
    """
    with torch.device("meta"), _SkipInit():
        yield


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers; works on the meta device, where nothing is allocated.

    >>> with shapes_only():
    ...     layer = torch.nn.Linear(1000, 1000)
    >>> parameter_bytes(layer)
    4004000
    """
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def title_activation_bytes(model_config: ModelConfig) -> int:
    """Forward activations of one encoded news: for NRAM, per title word, the word vector, the attention
    projections and output, the additive attention's hidden layer and each head's title_len weights;
    for the CNN families (LSTUR, NAML, NPA), the word vector, its unfolded window, the filters and the
    hidden layer, over the title and (NAML) the abstract.

    >>> title_activation_bytes(ModelConfig(word_dim=8, num_heads=2, head_dim=4, query_dim=8, title_len=4))
    896
    >>> title_activation_bytes(ModelConfig(kind="naml", word_dim=8, window=3, filters=8, query_dim=8, title_len=4,
    ...                                    abstract_len=6))
    1920
    """
    c = model_config
    if c.kind == "nram":
        per_position = c.word_dim + 4 * c.news_dim + c.query_dim + c.num_heads * c.title_len
    else:
        per_position = (1 + c.window) * c.word_dim + c.filters + c.query_dim
    positions = c.title_len + c.abstract_words
    return positions * per_position * FLOAT_BYTES


def training_bytes(model_config: ModelConfig, train_config: TrainConfig, parameters: int) -> int:
    """A training step's need: the weights with their gradients and Adam's two moments (4 copies),
    plus the activations of every title the step encodes (candidates and histories)."""
    titles = train_config.batch_size * (1 + train_config.negatives + model_config.history_len)
    return 4 * parameters + AUTOGRAD_COPIES * titles * title_activation_bytes(model_config)


def scoring_bytes(model_config: ModelConfig, runtime: RuntimeConfig, parameters: int) -> int:
    """Scoring's need: the weights, and one batch of histories encoded without gradients."""
    titles = runtime.eval_batch_size * model_config.history_len
    return parameters + titles * title_activation_bytes(model_config)


def check_budget(needed: int, *, what: str, settings: tuple[str, ...], budget: int | None = None) -> None:
    """Raise DataError when ``needed`` bytes exceed ``budget`` (default: the machine's memory).

    >>> check_budget(3 << 30, what="one training step", settings=("batch_size",), budget=1 << 30)
    Traceback (most recent call last):
    nram_core.fileio.DataError: one training step needs about 3.0 GiB, more than the 1.0 GiB of memory this machine has
    """
    budget = machine_memory() if budget is None else budget
    if budget is not None and needed > budget:
        raise DataError(f"{what} needs about {needed / (1 << 30):.1f} GiB, more than the "
                        f"{budget / (1 << 30):.1f} GiB of memory this machine has", settings=settings)
