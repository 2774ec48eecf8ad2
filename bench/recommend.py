"""``python -m bench.recommend``: latency to rank one user's impression, and the whole catalog.

Ours is ``nram_core.recommend.Recommender`` with the news vectors cached once (the cache
build is timed apart as ``cache_build_s``): a request encodes one user and takes one
matrix-vector product. The reference encodes the request's history and candidate titles
anew (``bench.baseline.naive_rank``); for the catalog that is every catalog title, so it
runs ``--baseline-catalog-requests`` times only. ``--catalog N`` pads the dev news to N
with generated titles (each an existing title's words in a new random order, category kept).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from nram_core.data.split import Split
from nram_core.recommend import Recommender

from . import common
from .baseline import naive_rank


def pad_catalog(split: Split, size: int, seed: int = 0) -> Split:
    """``split`` whose news table holds ``size`` news (plus the padding row); extra news are generated."""
    news = split.news
    extra = size + 1 - len(news)
    if extra <= 0:
        return split
    rng = np.random.default_rng(seed)
    source = rng.integers(1, len(news), size=extra)  # [X] existing news to draw words from
    tokens = news.tokens[source].copy()  # [X,L]
    for row in tokens:  # shuffle each title's words, keep its length
        n = int((row != 0).sum())
        row[:n] = rng.permutation(row[:n])
    padded = dataclasses.replace(
        news, ids=news.ids + [f"G{i}" for i in range(extra)], titles=news.titles + [""] * extra,
        abstracts=news.abstracts + [""] * extra, title_entities=news.title_entities + ["[]"] * extra,
        category=np.concatenate([news.category, news.category[source]]),  # [N+1] -> [size+1]
        subcategory=np.concatenate([news.subcategory, news.subcategory[source]]),  # [N+1] -> [size+1]
        tokens=np.concatenate([news.tokens, tokens]),  # [N+1,L] -> [size+1,L]
    )
    padded.__dict__.pop("_index", None)
    return dataclasses.replace(split, news=padded)


def _latencies(fn, requests: list) -> list[float]:
    return [common.timed(lambda: fn(request))[1] for request in requests]


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--catalog", type=int, default=0, help="pad the catalog to N news (0: the dev split's own)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per measurement")
    p.add_argument("--baseline-requests", type=int, default=50, help="timed reference impression requests")
    p.add_argument("--baseline-catalog-requests", type=int, default=1, help="timed reference catalog requests")
    p.add_argument("--top", type=int, default=10)
    args, device = common.start(p, argv)
    split, model = common.scoring_setup(args, device)
    split = pad_catalog(split, args.catalog, seed=args.seed) if args.catalog else split

    rec, cache_s = common.timed(lambda: Recommender(model, split))
    rng = np.random.default_rng(args.seed)
    impressions = rng.integers(0, split.num_impressions, size=args.requests).tolist()
    histories = [split.history_of(i) for i in impressions]
    tokens = split.news.tokens
    catalog = np.arange(1, len(split.news))

    rec.rank_impression(impressions[0])  # warm-up
    rec.rank_catalog(histories[0], top=args.top)
    impression_s = _latencies(rec.rank_impression, impressions)
    catalog_s = _latencies(lambda h: rec.rank_catalog(h, top=args.top), histories)

    def naive_impression(i):
        return naive_rank(model, tokens, split.history_of(i), split.candidates_of(i)[0], device=device)

    naive_impression(impressions[0])  # warm-up
    base_impression_s = _latencies(naive_impression, impressions[: args.baseline_requests])
    base_catalog_s = _latencies(lambda h: naive_rank(model, tokens, h, catalog, device=device),
                                histories[: args.baseline_catalog_requests])
    p50 = common.percentile_ms
    common.emit("recommend", {
        "device": str(device), "catalog_news": int(len(catalog)), "cache_build_s": round(cache_s, 3),
        "impression_candidates_mean": round(float(np.mean([len(split.candidates_of(i)[0]) for i in impressions])), 1),
        "impression_p50_ms": p50(impression_s, 50), "impression_p95_ms": p50(impression_s, 95),
        "catalog_p50_ms": p50(catalog_s, 50), "catalog_p95_ms": p50(catalog_s, 95),
        "baseline_impression_p50_ms": p50(base_impression_s, 50),
        "baseline_impression_p95_ms": p50(base_impression_s, 95),
        "baseline_catalog_p50_ms": p50(base_catalog_s, 50),
        "speedup": round(p50(base_impression_s, 50) / p50(impression_s, 50), 1),
        "catalog_speedup": round(p50(base_catalog_s, 50) / p50(catalog_s, 50), 1),
    }, args=args, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
