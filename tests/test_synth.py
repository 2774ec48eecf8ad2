"""Tests for nram_core.synth: MIND's exact file format, determinism and the ground truth.

Everything runs at demo scale (a couple of seconds per corpus); the corpus for seed 0 is
generated once per module and shared read-only.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from nram_core import synth

FILES = ("train/news.tsv", "train/behaviors.tsv", "dev/news.tsv", "dev/behaviors.tsv", "truth.json")
ENTITY_KEYS = ["Label", "Type", "WikidataId", "Confidence", "OccurrenceOffsets", "SurfaceForms"]
TIME_RE = re.compile(r"11/\d{2}/2019 (?:[1-9]|1[0-2]):[0-5]\d:[0-5]\d [AP]M")


def template_words(text: str) -> list[str]:
    """Lowercase word tokens of a title or abstract, "'s" and digits dropped: each must be a common
    word, a topical word of its subcategory or part of an entity name."""
    return re.findall(r"[a-z]+", re.sub(r"'s\b", "", text.lower()))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("synth") / "seed0", scale="demo", seed=0)


@pytest.fixture(scope="module")
def truth(corpus) -> dict:
    return json.loads((corpus / "truth.json").read_text(encoding="utf-8"))


def read_rows(path: Path) -> list[list[str]]:
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    return [line.split("\t") for line in text[:-1].split("\n")]


def read_news(corpus: Path, split: str) -> dict[str, list[str]]:
    return {row[0]: row for row in read_rows(corpus / split / "news.tsv")}


def read_behaviors(corpus: Path, split: str) -> list[dict]:
    out = []
    for row in read_rows(corpus / split / "behaviors.tsv"):
        assert len(row) == 5, row[:3]
        imp_id, user, time, history, impressions = row
        cands = [tok.rsplit("-", 1) for tok in impressions.split(" ")]
        out.append({
            "id": imp_id, "user": user, "time": time, "history_text": history,
            "history": history.split(" ") if history else [],
            "news": [c[0] for c in cands], "labels": [c[1] for c in cands],
        })
    return out


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(corpus, tmp_path):
    again = synth.generate(tmp_path / "again", scale="demo", seed=0)
    assert again == tmp_path / "again"
    produced = sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    assert produced == sorted(FILES)
    for name in FILES:
        assert (corpus / name).read_bytes() == (again / name).read_bytes(), name


def test_behaviors_written_in_chunks_are_the_same_bytes(corpus, tmp_path, monkeypatch):
    """The large scale's files are rendered a chunk of rows at a time; the chunks join seamlessly."""
    monkeypatch.setattr(synth, "_RENDER_CHUNK", 7)
    chunked = synth.generate(tmp_path / "chunked", scale="demo", seed=0)
    for name in FILES:
        assert (corpus / name).read_bytes() == (chunked / name).read_bytes(), name


def test_impressions_drawn_in_chunks_are_deterministic_and_well_formed(tmp_path, monkeypatch):
    """MIND-large's train split is drawn and written a chunk of impressions at a time, and its
    histories a chunk of users at a time (bounded memory); here the demo scale crosses 12 train and
    3 dev chunks and 7 chunks of users: same seed, same bytes, ids 1..n in time order, one history
    per user without repeats, and truth.json's counts are those of the files."""
    from nram_core.data.mind import read_behaviors as parse_behaviors

    monkeypatch.setattr(synth, "_IMPRESSION_CHUNK", 1000)
    monkeypatch.setattr(synth, "_HISTORY_USER_CHUNK", 300)
    first = synth.generate(tmp_path / "a", scale="demo", seed=0)
    second = synth.generate(tmp_path / "b", scale="demo", seed=0)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    counts = json.loads((first / "truth.json").read_text())["counts"]
    for split in ("train", "dev"):
        news_ids = [line.split("\t", 1)[0] for line in (first / split / "news.tsv").read_text().splitlines()]
        parsed = parse_behaviors(first / split / "behaviors.tsv", {n: i + 1 for i, n in enumerate(news_ids)},
                                 strict=True)
        assert parsed.impression_ids.tolist() == list(range(1, counts[f"{split}_impressions"] + 1))
        assert np.all(np.diff(parsed.times) >= 0) and int((parsed.labels == 1).sum()) == counts[f"{split}_clicks"]
        assert len(parsed.user_ids.names) == counts[f"{split}_users"] and len(news_ids) == counts[f"{split}_news"]
        clicks = np.add.reduceat(parsed.labels == 1, parsed.candidate_offsets[:-1])
        assert clicks.min() >= 1  # every impression has a click, chunk borders included
    histories: dict[str, str] = {}
    for split in ("train", "dev"):
        for row in read_behaviors(first, split):
            assert histories.setdefault(row["user"], row["history_text"]) == row["history_text"], row["user"]
    clicked = [h.split() for h in histories.values()]
    assert all(len(set(h)) == len(h) for h in clicked)  # no news twice in one history
    assert sum(not h for h in clicked) == counts["cold_users"]
    assert max(len(h) for h in clicked) <= synth.PARAMS.history_max


def test_large_scale_has_mind_large_shape():
    large = synth.SCALES["large"]
    assert large.n_users == 1_000_000 and large.n_news == 160_000
    assert (large.n_train_impressions, large.n_dev_impressions) == (2_200_000, 376_000)


def test_different_seed_gives_different_files(corpus, tmp_path):
    other = synth.generate(tmp_path / "other", scale="demo", seed=1)
    for name in FILES:
        assert (corpus / name).read_bytes() != (other / name).read_bytes(), name


def test_unknown_scale_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="demo"):
        synth.generate(tmp_path, scale="huge")
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- news.tsv


@pytest.mark.parametrize("split", ["train", "dev"])
def test_news_rows_have_mind_format(corpus, truth, split):
    subcat_to_cat = {s: c for c, subs in truth["categories"].items() for s in subs}
    qid_of: dict[str, str] = {}
    rows = read_rows(corpus / split / "news.tsv")
    assert len({r[0] for r in rows}) == len(rows)
    for row in rows:
        assert len(row) == 8, row[:3]
        nid, cat, sub, title, abstract, url, title_ents, abstract_ents = row
        assert re.fullmatch(r"N[1-9]\d*", nid)
        assert subcat_to_cat[sub] == cat
        assert 6 <= len(title.split()) <= 16, title
        assert not title[0].islower() and title == title.strip()
        assert re.fullmatch(r"https://assets\.msn\.com/labs/mind/AA[0-9A-Z]{5}\.html", url)
        for text, raw in ((title, title_ents), (abstract, abstract_ents)):
            ents = json.loads(raw)
            assert raw == json.dumps(ents)  # MIND's separators and key order
            for ent in ents:
                assert list(ent) == ENTITY_KEYS
                assert ent["Type"] in {"P", "O", "G"} and 0 < ent["Confidence"] <= 1
                assert re.fullmatch(r"Q\d+", ent["WikidataId"])
                assert qid_of.setdefault(ent["Label"], ent["WikidataId"]) == ent["WikidataId"]
                (surface,) = ent["SurfaceForms"]
                assert ent["OccurrenceOffsets"]
                for off in ent["OccurrenceOffsets"]:
                    assert text[off:off + len(surface)] == surface
    assert any(json.loads(r[6]) for r in rows) and any(r[6] == "[]" for r in rows)
    assert any(r[4] == "" for r in rows) and any(r[4] for r in rows)


def test_entities_in_text_are_always_annotated(corpus, truth):
    """Every entity name that occurs in a title is listed in title_entities."""
    for row in read_rows(corpus / "train" / "news.tsv"):
        labels = {e["Label"] for e in json.loads(row[6])}
        for label in truth["entities"][row[2]]:
            assert (label in row[3]) == (label in labels), (row[3], label)


# --------------------------------------------------------------------------- behaviors.tsv


@pytest.mark.parametrize("split", ["train", "dev"])
def test_behaviors_rows_have_mind_format(corpus, split):
    news = read_news(corpus, split)
    rows = read_behaviors(corpus, split)
    assert [r["id"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    history_of: dict[str, str] = {}
    times = []
    for r in rows:
        assert re.fullmatch(r"U[1-9]\d*", r["user"])
        assert TIME_RE.fullmatch(r["time"]), r["time"]
        times.append(datetime.strptime(r["time"], "%m/%d/%Y %I:%M:%S %p"))
        assert set(r["labels"]) <= {"0", "1"} and "1" in r["labels"]
        assert len(set(r["news"])) == len(r["news"])  # no repeated candidate
        assert len(set(r["history"])) == len(r["history"])  # no repeated click
        assert not set(r["news"]) & set(r["history"])  # candidates are fresh news
        assert all(n in news for n in r["news"] + r["history"])
        # A user's history is the same string on each of their rows, as in MIND.
        assert history_of.setdefault(r["user"], r["history_text"]) == r["history_text"]
    assert times == sorted(times)
    sizes = [len(r["news"]) for r in rows]
    assert min(sizes) == 5 and max(sizes) >= 50
    assert np.median(sizes) >= 12
    assert any("0" in r["labels"] for r in rows)
    assert sum("0" in r["labels"] for r in rows) >= 0.99 * len(rows)


def test_times_have_mind_clock_format(corpus):
    times = [r["time"] for r in read_behaviors(corpus, "dev")]
    assert any(re.search(r" [1-9]:", t) for t in times)  # hour not zero-padded
    assert any(" 12:" in t and t.endswith("PM") for t in times)
    assert any(" 12:" in t and t.endswith("AM") for t in times)


def test_train_covers_first_days_and_dev_the_last(corpus):
    def dates(split):
        return {r["time"].split(" ")[0] for r in read_behaviors(corpus, split)}

    assert dates("train") == {f"11/{d:02d}/2019" for d in range(9, 15)}
    assert dates("dev") == {"11/15/2019"}


def test_users_histories_and_dev_overlap(corpus, truth):
    train = read_behaviors(corpus, "train")
    dev = read_behaviors(corpus, "dev")
    train_hist = {r["user"]: r["history_text"] for r in train}
    dev_hist = {r["user"]: r["history_text"] for r in dev}
    everyone = {**train_hist, **dev_hist}
    lengths = np.array([len(h.split()) if h else 0 for h in everyone.values()])
    assert 0.03 <= np.mean(lengths == 0) <= 0.07  # cold users
    assert lengths.max() >= 50 and 8 <= np.median(lengths) <= 20
    returning = [u for u in dev_hist if u in train_hist]
    assert 0.7 <= len(returning) / len(dev_hist) <= 0.9
    assert all(dev_hist[u] == train_hist[u] for u in returning)
    # Dev shows news published on the dev day, which train never saw.
    assert set(read_news(corpus, "dev")) - set(read_news(corpus, "train"))


# --------------------------------------------------------------------------- truth.json


def test_truth_layout_and_oracle(truth):
    assert {"oracle", "topical_words", "common_words", "categories", "scale", "seed", "counts",
            "params"} <= set(truth)
    assert truth["scale"] == "demo" and truth["seed"] == 0
    assert 0.75 <= truth["oracle"]["auc"] <= 0.90
    for name in ("mrr", "ndcg@5", "ndcg@10"):
        assert 0.2 < truth["oracle"][name] < 1.0
    assert truth["oracle"]["ndcg@5"] < truth["oracle"]["ndcg@10"]
    # Hiding the popularity term (as titles and histories do) costs ranking quality, but far
    # less than the interest term is worth: the interest-only ranking stays well above chance.
    interest_only = truth["oracle_interest_only"]
    assert set(interest_only) == set(truth["oracle"])
    assert 0.7 < interest_only["auc"] < truth["oracle"]["auc"]
    assert {"a", "b", "c"} <= set(truth["params"])
    assert 0 < truth["params"]["b"] < truth["params"]["a"]


def test_vocabularies_are_disjoint(truth):
    topical = truth["topical_words"]
    common = set(truth["common_words"])
    subcats = [s for subs in truth["categories"].values() for s in subs]
    assert sorted(subcats) == sorted(topical)
    assert 8 <= len(truth["categories"]) <= 12 and 15 <= len(subcats) <= 25
    assert 50 <= len(common) <= 100
    seen: set[str] = set()
    for sub, words in topical.items():
        assert 15 <= len(words) <= 25, sub
        assert all(re.fullmatch(r"[a-z]+", w) for w in words), sub
        assert not set(words) & common, sub
        assert not set(words) & seen, sub
        seen |= set(words)
    # No entity name carries another subcategory's topical word.
    for sub, labels in truth["entities"].items():
        tokens = {t for label in labels for t in template_words(label)}
        assert not tokens & (seen - set(topical[sub])), sub


def test_titles_are_built_from_their_subcategory_words(corpus, truth):
    common = set(truth["common_words"])
    for row in read_rows(corpus / "train" / "news.tsv"):
        sub, title, abstract = row[2], row[3], row[4]
        topical = set(truth["topical_words"][sub])
        entity_words = {t for label in truth["entities"][sub] for t in template_words(label)}
        words = template_words(title)
        assert 2 <= sum(w in topical for w in words) <= 4, title
        assert set(words) <= common | topical | entity_words, title
        assert set(template_words(abstract)) <= common | topical | entity_words, abstract


def test_common_words_are_exactly_the_template_words(truth):
    templates = (synth._TITLES_PLAIN + synth._TITLES_ENTITY + synth._TITLE_PREFIXES
                 + synth._TITLE_SUFFIXES + synth._ABSTRACTS_PLAIN + synth._ABSTRACTS_ENTITY)
    used = {w for t in templates for w in template_words(re.sub(r"\{\w+\}", " ", t))}
    assert used | {"an"} == set(truth["common_words"])  # "an" comes from "a" + vowel


def test_histories_and_clicks_follow_the_true_interests(corpus, truth):
    """The signal a title-only model can learn: clicks land on the user's subcategories."""
    subcat = {nid: row[2] for nid, row in read_news(corpus, "dev").items()}
    interests = truth["user_interests"]
    assert all(1 <= len(v) <= 3 for v in interests.values())
    hist_hits, hist_total, hit = 0, 0, {"1": [], "0": []}
    for r in read_behaviors(corpus, "dev"):
        likes = interests[r["user"]]
        hist_hits += sum(subcat[n] in likes for n in r["history"])
        hist_total += len(r["history"])
        for n, label in zip(r["news"], r["labels"]):
            hit[label].append(subcat[n] in likes)
    assert hist_hits / hist_total > 0.65
    assert np.mean(hit["1"]) > 0.7 > 0.45 > np.mean(hit["0"])


def test_counts_match_files_and_demo_ranges(corpus, truth):
    counts = truth["counts"]
    users, news = set(), set()
    for split in ("train", "dev"):
        rows = read_behaviors(corpus, split)
        assert counts[f"{split}_impressions"] == len(rows)
        assert counts[f"{split}_clicks"] == sum(r["labels"].count("1") for r in rows)
        users |= {r["user"] for r in rows}
        news |= set(read_news(corpus, split))
    assert counts["users"] == len(users) and counts["news"] == len(news)
    assert 1_800 <= counts["users"] <= 2_200
    assert 2_500 <= counts["news"] <= 3_500
    assert 10_000 <= counts["train_impressions"] <= 14_000
    assert 2_500 <= counts["dev_impressions"] <= 3_500
    assert set(truth["user_interests"]) == users
