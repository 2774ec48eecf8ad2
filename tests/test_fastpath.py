"""The fast paths compute what the naive reference paths compute (bench.baseline), up to float rounding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.baseline import NaiveTrainSamples, naive_logits, naive_score_impressions
from nram_core.config import ModelConfig
from nram_core.data import load_corpus, resolve_layout
from nram_core.data.batching import TrainBatches
from nram_core.data.batching import trim_titles
from nram_core.fastpath import word_table
from nram_core.model import NRAM
from nram_core.scoring import encode_all_news, score_impressions, title_lengths

TITLE_LEN, HISTORY_LEN = 24, 20  # titles of the demo corpus are at most 17 words: columns to trim


@pytest.fixture(scope="module")
def corpus(demo_corpus):
    return load_corpus(resolve_layout(demo_corpus), title_len=TITLE_LEN)


def make_model(corpus, dropout=0.0):
    torch.manual_seed(0)
    return NRAM(ModelConfig(vocab_size=len(corpus.vocab), word_dim=32, num_heads=4, head_dim=8, query_dim=16,
                            dropout=dropout, title_len=TITLE_LEN, history_len=HISTORY_LEN))


def naive_inputs(split, batch):
    """The per-sample tensors typical NRMS code feeds: every title gathered per slot, padding included."""
    tokens = torch.from_numpy(split.news.tokens.astype(np.int64))
    rows = batch.news_rows
    return tokens[rows[batch.history]], batch.history_mask, tokens[rows[batch.candidates]]  # [B,H,L], [B,H], [B,C,L]


def test_dedup_batch_and_naive_per_sample_batch_give_the_same_logits_and_gradients(corpus):
    batches = TrainBatches(corpus.train, batch_size=32, negatives=4, history_len=HISTORY_LEN)
    batches.set_epoch(1)
    batch = batches[3]
    history, mask, candidates = naive_inputs(corpus.train, batch)
    assert history.shape == (32, HISTORY_LEN, TITLE_LEN) and candidates.shape == (32, 5, TITLE_LEN)
    assert len(batch.titles) < history.shape[0] * history.shape[1] + candidates.shape[0] * candidates.shape[1]
    model = make_model(corpus).train()  # dropout 0: train mode is deterministic

    def grads(logits_fn):
        model.zero_grad()
        logits = logits_fn()
        F.cross_entropy(logits, batch.labels).backward()
        return logits.detach(), torch.cat([p.grad.ravel() for p in model.parameters()])

    naive, naive_grad = grads(lambda: naive_logits(model, history, mask, candidates))
    dedup, dedup_grad = grads(lambda: model.score_batch(batch))
    trimmed_batch = batches[3]
    trimmed_batch.titles = trim_titles(trimmed_batch.titles)
    assert trimmed_batch.titles.shape[1] < TITLE_LEN
    trimmed, trimmed_grad = grads(lambda: model.score_batch(trimmed_batch))
    assert torch.allclose(dedup, naive, atol=1e-5) and torch.allclose(trimmed, naive, atol=1e-5)
    assert torch.allclose(dedup_grad, naive_grad, atol=1e-6, rtol=1e-4)
    assert torch.allclose(trimmed_grad, naive_grad, atol=1e-6, rtol=1e-4)


def test_fused_and_explicit_attention_agree_on_a_training_batch(corpus):
    batches = TrainBatches(corpus.train, batch_size=16, negatives=4, history_len=HISTORY_LEN)
    batches.set_epoch(1)
    titles = trim_titles(batches[0].titles)
    model = make_model(corpus).eval()
    with torch.no_grad():
        fused, _ = model.news_encoder(titles)
        explicit, weights = model.news_encoder(titles, need_weights=True)
    assert weights is not None and torch.allclose(fused, explicit, atol=1e-5)


def test_reference_loader_tokenises_titles_like_the_prepared_arrays(corpus):
    samples = NaiveTrainSamples(corpus.train, corpus.vocab, title_len=TITLE_LEN, history_len=HISTORY_LEN,
                                negatives=4)
    history, mask, candidates, label = samples[7]
    split = corpus.train
    clicked = split.history_of(int(samples.impressions[7]))[-HISTORY_LEN:]
    assert label == 0 and int(mask.sum()) == len(clicked)
    assert np.array_equal(history[: len(clicked)].numpy(), split.news.tokens[clicked])
    assert not history[len(clicked):].any()
    click = split.behaviors.candidates[samples.clicks[7]]
    assert np.array_equal(candidates[0].numpy(), split.news.tokens[click])


def test_encode_once_evaluation_equals_re_encoding_every_impression(corpus):
    model = make_model(corpus, dropout=0.2).train()  # evaluation must switch dropout off by itself
    n = 150
    fast, labels, offsets = score_impressions(model, corpus.dev, max_impressions=n, batch_size=256)
    assert model.training
    naive = naive_score_impressions(model, corpus.dev, n, batch_size=16)
    assert fast.shape == naive.shape == labels.shape and offsets[-1] == len(fast)
    assert np.allclose(fast, naive, atol=1e-5)


def test_length_bucketed_news_encoding_matches_plain_batches(corpus):
    model = make_model(corpus).eval()
    vectors = encode_all_news(model, corpus.dev, batch_size=300)
    with torch.no_grad():
        plain = model.encode_news(torch.from_numpy(corpus.dev.news.tokens))
    assert torch.all(vectors[0] == 0)
    assert torch.allclose(vectors[1:], plain[1:], atol=1e-5)


def test_trim_and_lengths_keep_every_word():
    tokens = torch.tensor([[5, 6, 0, 0, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert trim_titles(tokens).tolist() == [[5, 6], [7, 0], [0, 0]]
    assert trim_titles(torch.zeros(3, 4, dtype=torch.long)).shape == (3, 1)
    assert title_lengths(tokens.numpy()).tolist() == [2, 1, 0]


def test_trimming_and_sharding_carry_the_per_token_and_per_news_fields(corpus):
    batches = TrainBatches(corpus.train, batch_size=10, negatives=4, history_len=HISTORY_LEN)
    batches.set_epoch(1)
    batch = batches[0]
    batch.entities = batch.titles.long() * 7  # an aligned per-token field (as data.entities makes)
    trimmed = batch.trim()
    assert trimmed.titles.shape[1] < TITLE_LEN and trimmed.entities.shape == trimmed.titles.shape
    assert torch.equal(trimmed.entities, trimmed.titles.long() * 7) and torch.equal(trimmed.history, batch.history)
    shard = trimmed.shard(1, 2)
    assert shard.rows == 5 and torch.equal(shard.batch.entities, shard.batch.titles.long() * 7)
    assert torch.equal(shard.batch.news_rows[shard.batch.candidates], batch.news_rows[batch.candidates[5:]])
    assert torch.equal(shard.batch.categories, torch.from_numpy(
        corpus.train.news.category[shard.batch.news_rows.numpy()].astype(np.int64)))


def test_news_encoding_passes_category_ids_to_a_model_that_fuses_them(corpus):
    news = corpus.dev.news
    torch.manual_seed(0)
    model = NRAM(ModelConfig(vocab_size=len(corpus.vocab), word_dim=16, num_heads=2, head_dim=8, query_dim=8,
                             dropout=0.0, title_len=TITLE_LEN, history_len=HISTORY_LEN, use_categories=True,
                             num_categories=len(news.categories) + 1,
                             num_subcategories=len(news.subcategories) + 1)).eval()
    vectors = encode_all_news(model, corpus.dev, batch_size=500)
    with torch.no_grad():
        plain = model.encode_news(torch.from_numpy(news.tokens), torch.from_numpy(news.category.astype(np.int64)),
                                  torch.from_numpy(news.subcategory.astype(np.int64)))
    assert torch.allclose(vectors[1:], plain[1:], atol=1e-5)


@pytest.mark.parametrize("variant", [{"residual": False}, {"residual": True}, {"self_attention": False},
                                     {"use_categories": True}])
def test_projection_tables_and_sorted_histories_score_like_the_plain_path(corpus, variant):
    """``precompute`` (every word's and every news vector's projections once, histories by length)
    gives the plain fp32 path's scores, for each kind of encoder."""
    news = corpus.dev.news
    torch.manual_seed(0)
    extra = ({"num_categories": len(news.categories) + 1, "num_subcategories": len(news.subcategories) + 1}
             if variant.get("use_categories") else {})
    model = NRAM(ModelConfig(vocab_size=len(corpus.vocab), word_dim=32, num_heads=4, head_dim=8, query_dim=16,
                             dropout=0.2, title_len=TITLE_LEN, history_len=HISTORY_LEN, **variant, **extra))
    if variant.get("self_attention", True):
        model.eval()
        assert word_table(model.news_encoder) is not None
        assert model.config.vocab_size < title_lengths(news.tokens).sum(), "the table path is the one taken"
        model.train()
    fast, labels, offsets = score_impressions(model, corpus.dev, max_impressions=400, batch_size=64)
    plain, _, _ = score_impressions(model, corpus.dev, max_impressions=400, batch_size=64, precompute=False)
    assert model.training and np.allclose(fast, plain, atol=1e-5)
    if not variant.get("use_categories"):  # the naive reference reads titles only
        naive = naive_score_impressions(model, corpus.dev, 60, batch_size=16)
        assert np.allclose(fast[: len(naive)], naive, atol=1e-5)


def test_tables_are_refused_in_training_mode(corpus):
    model = make_model(corpus, dropout=0.2).train()
    with pytest.raises(RuntimeError, match="eval"):
        word_table(model.news_encoder)


def test_length_chunked_titles_give_the_same_logits_and_gradients(corpus):
    """``kernels(title_chunk=...)`` only regroups the titles: same logits and gradients."""
    from nram_core.fastpath import kernels

    batches = TrainBatches(corpus.train, batch_size=32, negatives=4, history_len=HISTORY_LEN)
    batches.set_epoch(1)
    batch = batches[2].trim()
    model = make_model(corpus).train()  # dropout 0: deterministic

    def run():
        model.zero_grad()
        logits = model.score_batch(batch)
        F.cross_entropy(logits, batch.labels).backward()
        return logits.detach(), torch.cat([p.grad.ravel() for p in model.parameters()])

    plain, plain_grad = run()
    with kernels(model, title_chunk=16):
        assert len(batch.titles) > 16 and model.news_encoder.title_chunk == 16
        chunked, chunked_grad = run()
    assert model.news_encoder.title_chunk == 0, "the setting ends with the block"
    assert torch.allclose(plain, chunked, atol=1e-5)
    assert torch.allclose(plain_grad, chunked_grad, atol=1e-6, rtol=1e-4)


def test_bf16_matmuls_keep_fp32_weights_inputs_and_outputs(corpus):
    from nram_core.fastpath import Linear, kernels

    batches = TrainBatches(corpus.train, batch_size=16, negatives=4, history_len=HISTORY_LEN)
    batches.set_epoch(1)
    batch = batches[0].trim()
    model = make_model(corpus).train()
    plain = model.score_batch(batch)
    with kernels(model, matmul_dtype=torch.bfloat16):
        low = model.score_batch(batch)
        low.sum().backward()
    assert all(m.matmul_dtype is None for m in model.modules() if isinstance(m, Linear))
    assert low.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(low, plain) and torch.allclose(low, plain, atol=0.05, rtol=0.05)  # bf16: ~3 digits


def test_bf16_rows_padded_to_a_bucket_change_nothing():
    """``fastpath.Linear`` pads a bf16 GEMM's rows to ``bucketed_rows`` (a bounded set of shapes for
    oneDNN's kernel cache); the padded rows are cut off, so output and gradients are those of the
    unpadded bf16 product."""
    import torch.nn.functional as F

    from nram_core.fastpath import Linear, bucketed_rows

    torch.manual_seed(0)
    layer = Linear(12, 5)
    layer.matmul_dtype = torch.bfloat16
    x = torch.randn(3, 23, 12, requires_grad=True)  # 69 rows -> a bucket of 128
    assert bucketed_rows(69) == 128
    out = layer(x)
    out.square().sum().backward()
    grads = x.grad.clone(), layer.weight.grad.clone()
    x.grad, layer.weight.grad = None, None
    bf = torch.bfloat16
    plain = F.linear(x.to(bf), layer.weight.to(bf), layer.bias.to(bf)).float()  # [3,23,12] -> [3,23,5]
    plain.square().sum().backward()
    assert out.shape == (3, 23, 5) and out.dtype == torch.float32
    assert torch.allclose(out, plain, atol=1e-6)
    assert torch.allclose(grads[0], x.grad, atol=1e-5) and torch.allclose(grads[1], layer.weight.grad, atol=1e-4)


def test_fused_bf16_qkv_projection_equals_three_bf16_layers():
    """In bf16 the self-attention's q, k and v are one bucketed product (one conversion of the
    input; the backward writes the three gradients into one buffer): the same outputs and
    gradients as three separate bf16 layers, including a part that gets no gradient."""
    from nram_core.fastpath import kernels
    from nram_core.model import MultiHeadSelfAttention

    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(input_dim=12, num_heads=2, head_dim=3)
    x = torch.randn(4, 17, 12, requires_grad=True)  # 68 rows -> a bucket of 128
    results = []
    for fused in (True, False):
        x.grad = None
        attention.zero_grad()
        with kernels(attention, matmul_dtype=torch.bfloat16):
            q, k, v = attention.project(x) if fused else (attention.q(x), attention.k(x), attention.v(x))
        (q.square().sum() + (q * k).sum()).backward()  # v gets no gradient
        results.append([q, k, v, x.grad, *(torch.zeros_like(p) if p.grad is None else p.grad  # unused v: None
                                           for p in attention.parameters())])
    names = ["q", "k", "v", "x.grad"] + [name for name, _ in attention.named_parameters()]
    for name, fused, separate in zip(names, *results):
        assert fused.shape == separate.shape, name
        # The input and bias gradients are sums over the three parts: one bf16 rounding fused, three
        # apart. Everything else is the same bf16 arithmetic.
        loose = name == "x.grad" or name.endswith("bias")
        tolerance = 1e-2 * float(separate.abs().max()) if loose else 1e-5
        assert torch.allclose(fused, separate, atol=tolerance, rtol=0 if loose else 1e-3), name
    with kernels(attention, matmul_dtype=torch.bfloat16):  # no rows at all: empty outputs of the right width
        assert [part.shape for part in attention.project(torch.randn(2, 0, 12))] == [(2, 0, 6)] * 3


def test_bf16_rows_are_not_bucketed_inside_a_compiled_graph():
    """Under ``torch.compile(dynamic=True)`` the row count stays symbolic: one graph for every count
    (buckets would pin it and recompile until dynamo's limit, then fall back to eager)."""
    from torch._dynamo.utils import counters

    from nram_core.fastpath import Linear

    torch._dynamo.reset()
    counters.clear()
    layer = Linear(12, 5)
    layer.matmul_dtype = torch.bfloat16
    compiled = torch.compile(lambda x: layer(x).sum(), dynamic=True, backend="eager")
    for rows in range(65, 75):
        compiled(torch.randn(rows, 12))
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_attention_without_padding_skips_the_mask_and_gives_the_same_output():
    """In eval mode a batch without padding runs the fused kernel without a mask; same output as
    the explicit masked softmax, and as a padded batch's rows."""
    from nram_core.model import MultiHeadSelfAttention

    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(input_dim=12, num_heads=3, head_dim=4).eval()
    x = torch.randn(5, 6, 12)
    full = torch.ones(5, 6, dtype=torch.bool)
    with torch.no_grad():
        fused, _ = attention(x, full)
        explicit, weights = attention(x, full, need_weights=True)
        padded = torch.cat([x, torch.randn(5, 2, 12)], dim=1)  # [5,8,12]: two padding positions
        masked, _ = attention(padded, torch.cat([full, torch.zeros(5, 2, dtype=torch.bool)], dim=1))
    assert weights.shape == (5, 3, 6, 6)
    assert torch.allclose(fused, explicit, atol=1e-6) and torch.allclose(fused, masked[:, :6], atol=1e-6)


def test_dropout_keeps_the_expected_value_and_rate():
    from nram_core.fastpath import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25).train()
    out = drop(torch.ones(401, 499))  # not a multiple of the 4 lanes each draw gives
    assert out.shape == (401, 499) and out.unique().tolist() == [0.0, float(np.float32(4 / 3))]
    assert abs(float((out == 0).float().mean()) - 0.25) < 0.005 and abs(float(out.mean()) - 1.0) < 0.01
    assert torch.equal(drop.eval()(torch.ones(5)), torch.ones(5))
    torch.manual_seed(0)
    again = Dropout(0.25).train()(torch.ones(401, 499))
    assert torch.equal(out, again), "seeded like the rest of the run"
    assert not Dropout(1.0).train()(torch.ones(9)).any()


def test_kernels_fast_dropout_false_gives_f_dropout_masks_and_restores_the_setting():
    """``fast_dropout=False`` (the plain reference path) draws ``F.dropout``'s masks, seed for seed;
    after the block the fast lanes come back."""
    import torch.nn.functional as F

    from nram_core.fastpath import Dropout, kernels

    wrapper = torch.nn.Sequential(Dropout(0.2)).train()
    x = torch.ones(64, 33)
    with kernels(wrapper, fast_dropout=False):
        torch.manual_seed(5)
        plain = wrapper(x)
    torch.manual_seed(5)
    assert torch.equal(plain, F.dropout(x, 0.2, training=True))
    assert wrapper[0].fast_dropout
    torch.manual_seed(5)
    assert not torch.equal(wrapper(x), plain)  # the fast lanes: another mask for the same seed


def test_batched_dot_products_equal_row_wise_ones():
    from nram_core.scoring import dot_scores, rowwise_dot_scores

    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 40, size=300)
    sizes[[3, 50]] = [0, 300]  # an empty impression and a very large one
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    news = torch.from_numpy(rng.normal(size=(500, 12)).astype(np.float32))
    news[0] = 0
    users = torch.from_numpy(rng.normal(size=(len(sizes), 12)).astype(np.float32))
    candidates = rng.integers(1, 500, size=int(offsets[-1])).astype(np.int32)
    batched = dot_scores(users, news, offsets, candidates)
    plain = rowwise_dot_scores(users, news, offsets, candidates)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    expected = (users.numpy()[owner] * news.numpy()[candidates]).sum(-1)
    assert batched.shape == plain.shape == expected.shape
    assert np.allclose(batched, expected, atol=1e-5) and np.allclose(plain, expected, atol=1e-5)


@pytest.mark.parametrize("precompute", [True, False])
def test_scoring_in_blocks_of_impressions_gives_the_same_scores(corpus, monkeypatch, precompute):
    """Memory stays bounded on a large split: impressions are scored in blocks, with the same result."""
    import nram_core.scoring as scoring

    model = make_model(corpus)
    whole, labels, offsets = score_impressions(model, corpus.dev, max_impressions=300, precompute=precompute)
    monkeypatch.setattr(scoring, "SCORE_BLOCK", 7)
    blocks, labels_b, offsets_b = score_impressions(model, corpus.dev, max_impressions=300, precompute=precompute)
    assert np.array_equal(offsets, offsets_b) and np.array_equal(labels, labels_b)
    assert np.allclose(whole, blocks, atol=1e-5)


def test_distinct_histories_match_np_unique_even_when_every_hash_collides(monkeypatch):
    """Hashed rows group histories exactly as np.unique(axis=0) does, numbered by first
    appearance; a hash that collides on every row falls back to comparing the rows."""
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 5, (40, 6))
    history = pool[rng.integers(0, 40, 500)]  # [500,6], many repeats
    mask = history > 0
    from nram_core import scoring

    for collide in (False, True):
        if collide:
            monkeypatch.setattr(scoring, "_row_hashes", lambda rows: np.zeros(len(rows), dtype=np.int64))
        first, inverse = scoring.distinct_histories(history, mask)
        assert np.array_equal(history[first][inverse], history) and np.array_equal(mask[first][inverse], mask)
        assert len(first) == len(np.unique(np.concatenate([history, mask], axis=1), axis=0))
        assert np.all(np.diff(first) > 0) and inverse[0] == 0  # numbered in order of first appearance


@pytest.mark.parametrize("multiple", [0, 4, 16])
def test_keys_padded_for_the_cpu_kernel_change_no_score(corpus, monkeypatch, multiple):
    """Keys and values padded past each title and history (masked, ``Projected.attention_inputs``)
    give the plain path's scores; forced here, since only some CPUs pad by default."""
    from nram_core import fastpath

    monkeypatch.setattr(fastpath, "KEY_MULTIPLE", {torch.backends.cpu.get_cpu_capability(): multiple})
    cpu = torch.device("cpu")
    if multiple == 16:
        assert [fastpath.key_width(n, cpu) for n in (5, 8, 12, 16, 17, 30)] == [5, 16, 16, 16, 17, 32]
    model = make_model(corpus).eval()
    table = word_table(model.news_encoder)
    index = torch.tensor([[3, 4, 5, 6, 7, 8]])
    q, k, v, key_mask = table.attention_inputs(index, torch.ones(1, 6, dtype=torch.bool))
    width = fastpath.key_width(6, cpu)
    assert q.shape[1] == 6 and k.shape[1] == v.shape[1] == key_mask.shape[1] == width
    assert key_mask[0].tolist() == [True] * 6 + [False] * (width - 6)
    fast, _, _ = score_impressions(model, corpus.dev, max_impressions=400, batch_size=64)
    plain, _, _ = score_impressions(model, corpus.dev, max_impressions=400, batch_size=64, precompute=False)
    assert np.allclose(fast, plain, atol=1e-5)


def test_installing_the_fast_layers_keeps_the_weights_and_the_plain_computation(corpus):
    """``fastpath.install`` re-classes the plain layers in place: the same state_dict, and the same
    outputs until a setting turns a fast path on (dropout: ``F.dropout``'s masks with ``fast_dropout=False``)."""
    from nram_core import fastpath

    plain = make_model(corpus, dropout=0.2)
    fast = make_model(corpus, dropout=0.2)
    assert all(type(m) in (torch.nn.Linear, torch.nn.Dropout) for m in plain.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Dropout))), "model.py builds plain layers"
    fastpath.install(fast)
    assert type(fast.news_encoder) is fastpath.ChunkedNewsEncoder
    assert type(fast.user_encoder.self_attention) is fastpath.FusedSelfAttention
    assert all(type(m) is fastpath.Linear for m in fast.modules() if isinstance(m, torch.nn.Linear))
    assert list(fast.state_dict()) == list(plain.state_dict())
    batches = TrainBatches(corpus.train, batch_size=16, negatives=4, history_len=HISTORY_LEN)
    batches.set_epoch(1)
    batch = batches[0].trim()
    with torch.no_grad():
        assert torch.equal(fast.eval().score_batch(batch), plain.eval().score_batch(batch))
        fast.train(), plain.train()
        with fastpath.kernels(fast, fast_dropout=False):
            torch.manual_seed(3)
            dropped = fast.score_batch(batch)
        torch.manual_seed(3)
        assert torch.equal(dropped, plain.score_batch(batch))


def test_kernels_give_each_setting_to_the_layer_types_that_declare_it(corpus):
    """Settings go by layer type, not by model: a bare news encoder takes ``title_chunk``, a plain
    stack of Linear layers ``matmul_dtype``; nothing else is touched, and all comes back after."""
    from nram_core import fastpath
    from nram_core.model import NewsEncoder

    encoder = make_model(corpus).news_encoder
    stack = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    with fastpath.kernels(encoder, title_chunk=8), fastpath.kernels(stack, matmul_dtype=torch.bfloat16):
        assert isinstance(encoder, NewsEncoder) and encoder.title_chunk == 8
        assert stack[0].matmul_dtype == torch.bfloat16 and not hasattr(stack[1], "matmul_dtype")
        assert all(m.matmul_dtype is None for m in encoder.modules() if isinstance(m, fastpath.Linear))
    assert encoder.title_chunk == 0 and stack[0].matmul_dtype is None
