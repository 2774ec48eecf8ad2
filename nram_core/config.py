"""Frozen configuration dataclasses and the named presets.

``ModelConfig`` describes the network; its ``vocab_size`` always comes from the data
(``dataclasses.replace`` after the vocabulary is built) and is saved with the
checkpoint. ``TrainConfig`` describes the optimisation and the data sampling.
``RuntimeConfig`` holds how a run computes (workers, precision, kernels), never what it
learns. The CLI maps each ``--flag`` onto a field of one of them.

A config that exists is valid: each one checks its fields when it is made (from flags, a
saved config.json or ``dataclasses.replace``), so a bad value fails there, in one line.
Only the sizes that come from the data are checked later (``ModelConfig.check_data_sizes``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


INITS = ("glorot", "torch")
KINDS = ("nram", "lstur", "naml", "npa")  # the model families (nram_core/families.py)
LONG_SHORT = ("ini", "con")
DATA_SIZES = ("vocab_size", "num_categories", "num_subcategories", "num_users")  # from the data, never typed

# Caps checked before anything is allocated: far above any real use (MIND titles are under 50
# words, its histories are cut at 50 clicks; the paper's model is 300-d with 15 x 20 heads), and
# low enough that a typo (a title_len of 10^9) is refused in one line instead of filling the memory
# or the disk with token caches.
MAX_TITLE_LEN = 512
MAX_HISTORY_LEN = 1024
MAX_WIDTH = 4096  # word_dim, query_dim, head_dim and the news vector's num_heads * head_dim
MAX_HEADS = 256
MAX_NEGATIVES = 1000


def flag_of(name: str) -> str:
    """The command-line spelling of config field (or setting) ``name``: the CLI gives each field one
    flag, and the app names that flag beside its own widget (a switch also has ``--no-`` before it).

    >>> flag_of("head_dim")
    '--head-dim'
    """
    return "--" + name.replace("_", "-")


def field_error(name: str, message: str, *more: str) -> ValueError:
    """A ValueError about field ``name`` (and the fields ``more`` that share the fault), carrying them
    as ``settings`` (as ``fileio.DataError`` does), so that a front end can name its own way to set
    each (the CLI: ``--name``)."""
    error = ValueError(message)
    error.settings = (name, *more)  # type: ignore[attr-defined]
    return error


def check_finite(config: Any) -> None:
    """Raise ValueError naming the first float field of ``config`` that is NaN or infinite (every
    comparison with NaN is False, so the range checks alone would let it through)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise field_error(f.name, f"{f.name} must be a finite number, got {value}")


def check_caps(config: Any, caps: dict[str, int]) -> None:
    """Raise ValueError naming the first field of ``config`` above its cap in ``caps``."""
    for name, cap in caps.items():
        if getattr(config, name) > cap:
            raise field_error(name, f"{name} must be <= {cap}, got {getattr(config, name)}")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 0  # set from the data's vocabulary, never typed by hand
    word_dim: int = 300  # at most MAX_WIDTH
    num_heads: int = 15  # at most MAX_HEADS
    head_dim: int = 20  # at most MAX_WIDTH, and num_heads * head_dim too
    query_dim: int = 200  # width of the additive attention's hidden layer; at most MAX_WIDTH
    dropout: float = 0.2
    title_len: int = 30  # words kept per title; at most MAX_TITLE_LEN
    history_len: int = 50  # clicks kept per user history; at most MAX_HISTORY_LEN
    # Ablations (the paper's open questions). Without self-attention the word embeddings go
    # straight into the additive attention in both encoders, so news_dim is word_dim.
    self_attention: bool = True
    # Fuse category and subcategory embeddings into the news vector (additive attention over
    # the title, category and subcategory views). The sizes come from the train split's
    # category vocabulary, like vocab_size, and the batches must carry ids of that vocabulary.
    use_categories: bool = False
    num_categories: int = 0  # set from the data, never typed by hand
    num_subcategories: int = 0  # set from the data, never typed by hand
    # Initialisation of the dense layers: "glorot" (Glorot-uniform weights, zero biases, as the
    # reference NRMS) or "torch" (PyTorch's nn.Linear default).
    init: str = "glorot"
    embedding_std: float = 0.1  # std of randomly initialised word vectors (pretrained ones replace them)
    # Not in the paper: a residual connection around each self-attention (out = x + attention(x)),
    # which keeps every position's own word in its vector, so the additive attention can still pick
    # words out. Off in `paper`, on in `demo` (see PRESETS); the ablation suite toggles it.
    residual: bool = False
    # The model family (nram_core/families.py): "nram", this paper's; "lstur" (An et al., ACL 2019):
    # a CNN title encoder with topic embeddings, and a GRU over the clicks with a long-term user
    # embedding. The fields below are lstur's; nram ignores them.
    kind: str = "nram"
    filters: int = 400  # CNN filters over the title's words: the title vector's width
    window: int = 3  # CNN window in words (odd, so each word is its window's centre)
    category_dim: int = 100  # topic (category and subcategory) embedding width, with use_categories
    long_short: str = "ini"  # the long-term user vector starts the GRU ("ini") or joins its output ("con")
    user_mask: float = 0.0  # probability of masking a sample's long-term user vector while training
    num_users: int = 0  # the train split's users, set from the data, never typed by hand
    # NAML (Wu et al., IJCAI 2019) reads the abstract as a view of its own: words kept per abstract.
    abstract_len: int = 50  # at most MAX_TITLE_LEN
    # NPA (Wu et al., KDD 2019): the width of the user-id embedding whose projections are the
    # personalized word and news attention queries.
    user_dim: int = 50
    # A learned user vector for a history with no click (``layers.EmptyHistory``), trained on the
    # empty histories of train; without it every candidate of a cold user scores the same (AUC .5).
    empty_history: bool = True

    @property
    def reads_users(self) -> bool:
        """Whether the family reads who the user is (a user-id embedding), not only what they clicked:
        its batches then carry ids of the train split's ``UserVocab``, saved with the run as users.json."""
        return self.kind in ("lstur", "npa")

    @property
    def reads_abstracts(self) -> bool:
        """Whether the family reads each news' abstract (NAML's body view), not only its title: its
        batches then carry ``abstract_len`` abstract tokens per news."""
        return self.kind == "naml"

    @property
    def abstract_words(self) -> int:
        """Abstract words read per news: ``abstract_len`` for a family that reads abstracts, else 0."""
        return self.abstract_len if self.reads_abstracts else 0

    @property
    def news_dim(self) -> int:
        if self.kind == "lstur":
            return self.filters + (2 * self.category_dim if self.use_categories else 0)
        if self.kind in ("naml", "npa"):  # every view (NAML) or the title (NPA) is ``filters`` wide
            return self.filters
        return self.num_heads * self.head_dim if self.self_attention else self.word_dim

    def __post_init__(self) -> None:
        self.validate()  # the sizes from the data come later: ``check_data_sizes``

    def validate(self) -> None:
        """Raise ValueError on a bad field (every config runs this when it is made; the sizes that come
        from the data are ``check_data_sizes``).

        >>> ModelConfig(num_heads=0)
        Traceback (most recent call last):
        ValueError: num_heads must be >= 1, got 0
        >>> ModelConfig(title_len=10**9)
        Traceback (most recent call last):
        ValueError: title_len must be <= 512, got 1000000000
        """
        check_finite(self)
        for name in ("word_dim", "num_heads", "head_dim", "query_dim", "title_len", "history_len"):
            if getattr(self, name) < 1:
                raise field_error(name, f"{name} must be >= 1, got {getattr(self, name)}")
        check_caps(self, {"word_dim": MAX_WIDTH, "num_heads": MAX_HEADS, "head_dim": MAX_WIDTH,
                          "query_dim": MAX_WIDTH, "title_len": MAX_TITLE_LEN, "history_len": MAX_HISTORY_LEN})
        if self.num_heads * self.head_dim > MAX_WIDTH:
            raise field_error("num_heads", f"num_heads * head_dim must be <= {MAX_WIDTH}, got {self.num_heads} * "
                              f"{self.head_dim}", "head_dim")
        if self.kind not in KINDS:
            raise field_error("kind", f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("filters", "window", "category_dim", "abstract_len", "user_dim"):
            if getattr(self, name) < 1:
                raise field_error(name, f"{name} must be >= 1, got {getattr(self, name)}")
        check_caps(self, {"filters": MAX_WIDTH, "window": MAX_TITLE_LEN, "category_dim": MAX_WIDTH,
                          "abstract_len": MAX_TITLE_LEN, "user_dim": MAX_WIDTH})
        if self.window % 2 == 0:
            raise field_error("window", f"window must be odd (a word at its centre), got {self.window}")
        if self.long_short not in LONG_SHORT:
            raise field_error("long_short", f"long_short must be one of {LONG_SHORT}, got {self.long_short!r}")
        if self.kind == "lstur" and self.long_short == "con" and self.news_dim % 2:
            raise field_error("long_short", f"long_short 'con' halves the news width between the GRU and the "
                                            f"long-term vector: it must be even, got {self.news_dim}", "filters")
        if not 0.0 <= self.user_mask < 1.0:
            raise field_error("user_mask", f"user_mask must be in [0, 1), got {self.user_mask}")
        if self.init not in INITS:
            raise field_error("init", f"init must be one of {INITS}, got {self.init!r}")
        if self.embedding_std <= 0:
            raise field_error("embedding_std", f"embedding_std must be > 0, got {self.embedding_std}")
        if self.residual and self.self_attention and self.num_heads * self.head_dim != self.word_dim:
            raise field_error("residual", f"residual needs num_heads * head_dim == word_dim, got {self.num_heads} * "
                              f"{self.head_dim} != {self.word_dim}", "num_heads", "head_dim", "word_dim")
        if not 0.0 <= self.dropout < 1.0:
            raise field_error("dropout", f"dropout must be in [0, 1), got {self.dropout}")

    def check_buildable(self, kind: str) -> None:
        """Raise ValueError unless a model of family ``kind`` can be built from this config: its kind, and
        the sizes that come from the data (the vocabulary, and ``check_data_sizes``), filled in."""
        if self.kind != kind:
            raise ValueError(f"a {kind} model needs a ModelConfig of kind {kind!r}, got {self.kind!r}")
        if self.vocab_size < 2:
            raise ValueError("ModelConfig.vocab_size must come from the data's vocabulary (>= 2)")
        self.check_data_sizes()  # the other fields were checked when the config was made

    def check_data_sizes(self) -> None:
        """Raise ValueError when a size that comes from the data is missing (the category counts of a
        model that reads categories, the user count of one that reads users); run once the sizes are
        filled in (``train.prepare_run``)."""
        if self.reads_users and self.num_users < 1:
            raise field_error("kind", f"a {self.kind} model needs num_users from the train split's users")
        if self.use_categories and (self.num_categories < 2 or self.num_subcategories < 2):
            raise field_error("use_categories", "use_categories needs num_categories and num_subcategories from "
                              "the train split's category vocabulary (>= 2 each)")


@dataclass(frozen=True)
class TrainConfig:
    """The recipe: what a run learns from (epochs, sampling, optimiser, starting word vectors).
    How it computes is ``RuntimeConfig``."""

    epochs: int = 5
    max_steps: int = 0  # 0: no step limit
    batch_size: int = 64
    negatives: int = 4  # K: non-clicks sampled from the same impression per click; at most MAX_NEGATIVES
    lr: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 0
    min_word_count: int = 1
    patience: int = 0  # early stopping on dev AUC; 0 disables it
    max_impressions: int = 0  # cap on train impressions; 0 uses all
    max_dev_impressions: int = 0  # cap on dev impressions evaluated per epoch; 0 uses all
    # Starting word embeddings: "corpus" (skip-gram word2vec on the run's news text, see
    # data/vectors.py), "none" (random) or the path of a GloVe-format text file.
    word_vectors: str = "corpus"
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 over this many steps
    grad_clip: float = 0.0  # clip the gradients' global L2 norm to this; 0 disables it
    vector_std: float = 0.0  # rescale pretrained word vectors to this std (0 keeps their own scale)
    # The latest share of train impressions held out to choose the best epoch and stop early; dev is
    # then scored once, for the report. 0: choose on dev itself (the older protocol, which flatters).
    validation: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad field (every config runs this when it is made).

        >>> TrainConfig(grad_clip=float("nan"))
        Traceback (most recent call last):
        ValueError: grad_clip must be a finite number, got nan
        """
        check_finite(self)
        for name in ("epochs", "batch_size", "negatives", "min_word_count"):
            if getattr(self, name) < 1:
                raise field_error(name, f"{name} must be >= 1, got {getattr(self, name)}")
        check_caps(self, {"negatives": MAX_NEGATIVES})
        for name in ("max_steps", "patience", "max_impressions", "max_dev_impressions", "warmup_steps",
                     "grad_clip", "vector_std"):
            if getattr(self, name) < 0:
                raise field_error(name, f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise field_error("lr", f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.validation <= 0.5:
            raise field_error("validation", f"validation must be in [0, 0.5], got {self.validation}")
        if not 0 <= self.seed < 2**32:  # NumPy's and torch's seeds are unsigned 32-bit
            raise field_error("seed", f"seed must be in [0, 2**32), got {self.seed}")
        if not self.word_vectors.strip():
            raise field_error("word_vectors", "word_vectors must be 'corpus', 'none' or a file path")


@dataclass(frozen=True)
class RuntimeConfig:
    """How a run computes, never what it learns: worker processes, evaluation batches, precision and
    kernels. Two runs of one recipe (``TrainConfig``) with other runtime settings train the same model
    to within rounding, so a suite keys its runs without these fields and a run may be continued
    with other ones (on another machine). Results equal to the last digit need the same runtime
    settings on the same kind of machine: ``amp`` rounds GEMMs to bf16 where the device has native
    bf16, and ``fast_dropout`` draws its masks from another random stream than ``F.dropout``.

    >>> RuntimeConfig().plain_fp32().amp, RuntimeConfig(num_workers=2).num_workers
    (False, 2)
    >>> RuntimeConfig(eval_batch_size=0)
    Traceback (most recent call last):
    ValueError: eval_batch_size must be >= 1, got 0
    """

    num_workers: int = 0  # DataLoader worker processes building batches; 0 builds them in the loop
    eval_batch_size: int = 1024  # news and histories encoded per forward pass when scoring dev
    # bf16 matmuls with fp32 weights: on CUDA, autocast and TF32; on a CPU with native bf16 dot
    # products (avx512_bf16 or AMX), the Linear layers' GEMMs only (elsewhere fp32, said once).
    amp: bool = True
    title_chunk: int = 256  # CPU: encode a batch's titles in length-sorted chunks of this many; 0: all at once
    fused_adam: bool = True  # Adam's fused kernel on CPU and CUDA (the same update as the per-tensor loop)
    fast_dropout: bool = True  # CPU: dropout masks from 16-bit random lanes (fastpath.Dropout); False: F.dropout
    compile: bool = False  # wrap the training step in torch.compile

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad field (every config runs this when it is made)."""
        check_finite(self)
        if self.eval_batch_size < 1:
            raise field_error("eval_batch_size", f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        for name in ("num_workers", "title_chunk"):
            if getattr(self, name) < 0:
                raise field_error(name, f"{name} must be >= 0, got {getattr(self, name)}")

    def plain_fp32(self) -> "RuntimeConfig":
        """The plain fp32 path the fast one is measured against (``bench.train``, ``bench.parity``):
        fp32 GEMMs, titles in one chunk, Adam's per-tensor loop, ``F.dropout``."""
        return dataclasses.replace(self, amp=False, title_chunk=0, fused_adam=False, fast_dropout=False)


RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(RuntimeConfig))


PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    # The paper's NRMS-style model: 300-d words, 15 heads x 20 dims, query 200, Glorot-uniform
    # layers as the reference NRMS, word vectors learned from the corpus's own news text. The
    # recipe (lr 1e-3 after a 100-step warm-up, gradients clipped at norm 1) learns from the first
    # steps with or without pretrained vectors; docs/experiments.md measures each part of it.
    # Both presets choose the epoch on the latest 10% of train (``validation``), never on dev.
    "paper": (
        ModelConfig(word_dim=300, num_heads=15, head_dim=20, query_dim=200, dropout=0.2,
                    title_len=30, history_len=50, init="glorot", residual=False),
        TrainConfig(epochs=5, batch_size=64, negatives=4, lr=1e-3, warmup_steps=100, grad_clip=1.0,
                    word_vectors="corpus", validation=0.1),
    ),
    # Small and quick on two CPU cores; trains on the demo corpus in about two minutes. It adds a
    # residual around each self-attention (not in the paper): without it the additive attention
    # sees positions that self-attention has already mixed, and spreads evenly over them, so the
    # studio's attention views would show nothing (docs/experiments.md measures both).
    "demo": (
        ModelConfig(word_dim=64, num_heads=4, head_dim=16, query_dim=64, dropout=0.2,
                    title_len=16, history_len=50, init="glorot", residual=True),
        TrainConfig(epochs=4, batch_size=64, negatives=4, lr=3e-3, word_vectors="corpus", validation=0.1),
    ),
}


# The other families at the same two sizes, trained with the same recipe as NRAM's preset of that name
# (one protocol: the optimiser and the data are not part of what is compared). LSTUR's sizes are
# microsoft/recommenders' published hparams (lstur.yaml: 400 filters, window 3, attention 200,
# 100-d topic embeddings, ini) and the user mask of yusanshi/news-recommendation (p = 0.5).
FAMILY_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "lstur": {
        "paper": dict(kind="lstur", word_dim=300, filters=400, window=3, query_dim=200, category_dim=100,
                      use_categories=True, long_short="ini", user_mask=0.5, residual=False),
        "demo": dict(kind="lstur", word_dim=64, filters=64, window=3, query_dim=64, category_dim=16,
                     use_categories=True, long_short="ini", user_mask=0.5, residual=False),
    },
    # NAML: recommenders' naml.yaml (400 filters, window 3, attention 200, 100-d category and
    # subcategory embeddings, 50 abstract words).
    "naml": {
        "paper": dict(kind="naml", word_dim=300, filters=400, window=3, query_dim=200, category_dim=100,
                      abstract_len=50, use_categories=True, residual=False),
        "demo": dict(kind="naml", word_dim=64, filters=64, window=3, query_dim=64, category_dim=16,
                     abstract_len=24, use_categories=True, residual=False),
    },
    # NPA: the paper's sizes (400 filters, window 3, 50-d user embedding, 200-d preference queries), which
    # recommenders' npa.yaml also uses. The paper masks no user; p = 0.1 trains the unknown user's generic
    # queries (a zero embedding) on a tenth of the samples, and LSTUR's p = 0.5 measured no better on
    # unknown users (docs/experiments.md).
    "npa": {
        "paper": dict(kind="npa", word_dim=300, filters=400, window=3, query_dim=200, user_dim=50,
                      user_mask=0.1, residual=False),
        "demo": dict(kind="npa", word_dim=64, filters=64, window=3, query_dim=64, user_dim=16,
                     user_mask=0.1, residual=False),
    },
}


def preset(name: str, kind: str = "nram") -> tuple[ModelConfig, TrainConfig]:
    """The configs of preset ``name`` (``paper``, ``demo``) for model family ``kind``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if kind not in KINDS:
        raise field_error("kind", f"unknown model {kind!r}; choose one of {list(KINDS)}")
    model_config, train_config = PRESETS[name]
    if kind != "nram":
        model_config = dataclasses.replace(model_config, **FAMILY_SIZES[kind][name])
    return model_config, train_config


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Replace the fields of ``config`` named in ``overrides`` (None values are ignored)."""
    names = {f.name for f in dataclasses.fields(config)}
    chosen = {k: v for k, v in overrides.items() if k in names and v is not None}
    return dataclasses.replace(config, **chosen)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


# Fields added after runs were saved without them, with the value those runs were trained with (which is
# not the new default): a saved config that lacks the key loads as the model it describes.
ABSENT_FROM_OLDER_RUNS: dict[str, dict[str, Any]] = {"ModelConfig": {"empty_history": False}}


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build ``cls`` from saved JSON, ignoring keys a newer/older version does not know. Each value
    must have its field's type (an int for ``word_dim``, never ``"64"``); a TypeError names the field.

    >>> from_dict(ModelConfig, {"word_dim": 32}).word_dim
    32
    >>> from_dict(ModelConfig, {}).empty_history  # saved before the field existed (ABSENT_FROM_OLDER_RUNS)
    False
    >>> from_dict(ModelConfig, {"word_dim": "64"})
    Traceback (most recent call last):
    TypeError: field 'word_dim': expected int, got str '64'
    """
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    values = dict(ABSENT_FROM_OLDER_RUNS.get(cls.__name__, {}))
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _typed(f.name, data[f.name], type(f.default))
    return cls(**values)


def _typed(name: str, value: Any, kind: type) -> Any:
    """``value`` as the type of a field whose default is of ``kind`` (JSON has no tuples, and
    writes 1.0 as 1.0 but a hand-edited file may say 1)."""
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str),
          tuple: isinstance(value, (list, tuple))}.get(kind, True)
    if not ok:
        raise TypeError(f"field {name!r}: expected {kind.__name__}, got {type(value).__name__} {value!r:.40}")
    if kind is float:
        try:
            return float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise field_error(name, f"{name} must be a finite number, got {value!r:.40}") from None
    return tuple(value) if kind is tuple else value
