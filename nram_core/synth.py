"""A deterministic synthetic corpus in MIND's exact file format, with known ground truth.

Why it exists: the real MIND download is large and licensed, and a model trained on it
gives no way to tell "the model is weak" from "the data is hard". This generator writes
``train/`` and ``dev/`` folders that any MIND reader accepts unchanged, plus a
``truth.json`` that says how the clicks were made and how well the *true* click
probabilities rank the dev impressions (the oracle metrics), and how well their interest
term alone ranks them (``oracle_interest_only``: the ceiling of a model that reads titles and
histories, which cannot see popularity).

How the clicks are made (all drawn from ``numpy.random.default_rng(seed)``):

* Each news item has a subcategory (hence a category), a publish day and a latent
  popularity (lognormal). Its title and abstract are filled from templates with words
  of its subcategory's own topical vocabulary, common words and at most one entity
  name, so the subcategory can be read off the title.
* Each user has a sparse interest vector over subcategories: a Dirichlet mass on one
  to three of them plus a small uniform background. The click history is drawn mostly
  from those interests, with some random exploration.
* An impression shows recent news: some picked from the user's interests, the rest at
  random. Each candidate is clicked with
  ``p = sigmoid(a * interest[user, subcategory] + b * log(popularity) + c)``, and
  every impression gets at least one click. The popularity term is kept mild: it is
  invisible in a title, whereas the interest term is learnable from the words.

Everything is numpy + stdlib, vectorised where the sizes are large, and the same seed
gives byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from nram_core.fileio import (DataError, atomic_write_json, atomic_write_text, atomic_write_with, read_json,
                             temp_dir_beside)
from nram_core.metrics import METRIC_NAMES, evaluate_flat

__all__ = ["Scale", "ClickParams", "SCALES", "PARAMS", "generate", "read_truth"]


# --------------------------------------------------------------------------- knobs


@dataclass(frozen=True)
class Scale:
    """Size knobs of one corpus. Every user listed here appears in some behaviors file."""

    name: str
    n_news: int  # news generated; each split's news.tsv lists those its behaviors use
    n_train_users: int
    n_dev_returning_users: int  # dev users that also have train impressions
    n_dev_new_users: int  # dev users never seen in train
    n_train_impressions: int
    n_dev_impressions: int

    @property
    def n_users(self) -> int:
        return self.n_train_users + self.n_dev_new_users

    def __post_init__(self) -> None:  # every listed user gets at least one impression of its split
        if self.n_train_users > self.n_train_impressions or self.n_dev_returning_users > self.n_train_users \
                or self.n_dev_returning_users + self.n_dev_new_users > self.n_dev_impressions:
            raise ValueError(f"scale {self.name}: more users than impressions to give them")


SCALES: dict[str, Scale] = {
    "demo": Scale(
        name="demo",
        n_news=3_000,
        n_train_users=1_800,
        n_dev_returning_users=800,
        n_dev_new_users=200,
        n_train_impressions=12_000,
        n_dev_impressions=3_000,
    ),
    # MIND-small: 50k users, ~51k train news, ~157k train and ~73k dev impressions.
    "small": Scale(
        name="small",
        n_news=51_000,
        n_train_users=45_000,
        n_dev_returning_users=20_000,
        n_dev_new_users=5_000,
        n_train_impressions=150_000,
        n_dev_impressions=70_000,
    ),
    # MIND-large: 1M users, ~160k news, ~2.2M train and ~376k dev impressions. The train split is
    # drawn and written in chunks of impressions.
    "large": Scale(
        name="large",
        n_news=160_000,
        n_train_users=870_000,
        n_dev_returning_users=120_000,
        n_dev_new_users=130_000,
        n_train_impressions=2_200_000,
        n_dev_impressions=376_000,
    ),
}
_RENDER_CHUNK = 50_000  # behaviors rows rendered per write
_IMPRESSION_CHUNK = 250_000  # impressions whose candidates are drawn at a time (MIND-small's splits fit in one)
_HISTORY_USER_CHUNK = 200_000  # users whose histories are drawn at a time (MIND-small's 50k fit in one)


@dataclass(frozen=True)
class ClickParams:
    """The behaviour model shared by every scale; written to truth.json as ``params``."""

    # p(click) = sigmoid(a * interest + b * log(popularity) + c)
    a: float = 4.5
    b: float = 0.3
    c: float = -5.2
    popularity_sigma: float = 1.0  # log(popularity) ~ Normal(0, sigma)
    # Interests: Dirichlet(alpha) over k main subcategories, k ~ interest_k_probs (1, 2, 3),
    # plus `background` mass spread uniformly over all subcategories.
    interest_k_probs: tuple[float, float, float] = (0.35, 0.40, 0.25)
    dirichlet_alpha: float = 1.0
    background: float = 0.10
    # Histories: length ~ lognormal(log(median), sigma) clipped to [1, max]; cold users empty.
    cold_user_frac: float = 0.05
    history_median: float = 15.0
    history_sigma: float = 0.9
    history_max: int = 100
    history_explore: float = 0.15  # share of history clicks drawn ignoring the interests
    # Impressions: size ~ lognormal(log(median), sigma) clipped to [min, max].
    impression_median: float = 20.0
    impression_sigma: float = 0.6
    impression_min: int = 5
    impression_max: int = 80
    matched_frac_low: float = 0.25  # share of candidates drawn from the user's interests,
    matched_frac_high: float = 0.55  # uniform in [low, high] per impression
    candidate_window_days: int = 3  # candidates were published on the day or the 2 before
    # News: publish days -history_days..-1 feed histories, days 0..6 feed impressions.
    history_days: int = 14
    history_news_frac: float = 0.55
    title_entity_prob: float = 0.4
    empty_abstract_prob: float = 0.04


PARAMS = ClickParams()

# Calendar: train impressions on days 0..5 (11/09-11/14/2019), dev on day 6 (11/15/2019).
_FIRST_DAY = 9  # November 9th, 2019
_TRAIN_DAYS = 6
_DEV_DAY = 6
# Relative activity per hour of day (people read news in the morning and evening).
_HOUR_WEIGHTS = (
    1, 1, 1, 1, 1, 2, 4, 6, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 6, 6, 5, 4, 3, 2,
)


# --------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class _Topic:
    category: str
    subcategory: str
    weight: float  # relative share of news, and of user interest picks
    words: tuple[str, ...]  # topical vocabulary: lowercase, single tokens, disjoint
    entities: tuple[tuple[str, str], ...]  # (label, MIND entity type)


# Person names are invented; organisations and places are real but only named in
# neutral headlines. No entity name contains another subcategory's topical word.
_TOPICS: tuple[_Topic, ...] = (
    _Topic("sports", "football_nfl", 1.5, (
        "quarterback", "touchdown", "playoffs", "linebacker", "gridiron", "interception",
        "fumble", "receiver", "tackle", "sack", "punt", "kickoff", "endzone", "superbowl",
        "cornerback", "huddle", "blitz", "rushing", "halftime", "draft",
    ), (("Marcus Hale", "P"), ("Dallas Cowboys", "O"), ("Green Bay Packers", "O"),
        ("Lambeau Field", "G"), ("NFL", "O"))),
    _Topic("sports", "basketball_nba", 1.0, (
        "dunk", "rebound", "layup", "backcourt", "frontcourt", "rookie", "buzzer",
        "hardwood", "assists", "jumper", "playmaker", "courtside", "dribble", "hoops",
        "tipoff", "turnovers", "steals", "blocks", "franchise",
    ), (("Jaylen Brooks", "P"), ("Boston Celtics", "O"), ("Golden State Warriors", "O"),
        ("NBA", "O"), ("Madison Square Garden", "G"))),
    _Topic("sports", "soccer", 0.7, (
        "striker", "midfielder", "goalkeeper", "penalty", "offside", "derby", "stoppage",
        "header", "winger", "relegation", "pitch", "brace", "equaliser", "defender",
        "transfer", "referee", "fixture", "supporters",
    ), (("Luca Moretti", "P"), ("Premier League", "O"), ("Manchester United", "O"),
        ("Real Madrid", "O"), ("Anfield", "G"))),
    _Topic("sports", "golf", 0.4, (
        "birdie", "bogey", "fairway", "putter", "caddie", "tee", "bunker", "clubhouse",
        "par", "handicap", "putt", "mulligan", "leaderboard", "backswing", "ace",
        "dogleg", "albatross", "golfer",
    ), (("Ryan Calloway", "P"), ("PGA", "O"), ("Augusta National", "G"),
        ("St Andrews", "G"), ("Ryder Cup", "O"))),
    _Topic("news", "newspolitics", 1.5, (
        "senate", "congress", "impeachment", "ballot", "governor", "legislation",
        "lawmakers", "campaign", "caucus", "senator", "bipartisan", "filibuster",
        "subpoena", "testimony", "veto", "referendum", "voters", "polling", "primaries",
    ), (("Ellen Marsh", "P"), ("White House", "O"), ("Capitol Hill", "G"),
        ("Supreme Court", "O"), ("Iowa", "G"))),
    _Topic("news", "newscrime", 1.2, (
        "police", "suspect", "arrest", "robbery", "homicide", "detectives", "shooting",
        "burglary", "indictment", "sheriff", "jury", "prosecutors", "sentencing",
        "verdict", "carjacking", "warrant", "manhunt", "fugitive",
    ), (("Sam Ortega", "P"), ("FBI", "O"), ("Cook County", "G"), ("Harris County", "G"),
        ("NYPD", "O"))),
    _Topic("news", "newsscienceandtechnology", 0.7, (
        "smartphone", "software", "robot", "satellite", "astronauts", "telescope",
        "algorithm", "chipmaker", "battery", "cybersecurity", "encryption", "rocket",
        "spacecraft", "quantum", "processor", "gadget", "laboratory", "physicists",
    ), (("Nadia Kowal", "P"), ("NASA", "O"), ("Silicon Valley", "G"), ("SpaceX", "O"),
        ("Microsoft", "O"))),
    _Topic("news", "newsworld", 1.0, (
        "embassy", "diplomats", "refugees", "ceasefire", "parliament", "summit",
        "sanctions", "protesters", "treaty", "border", "minister", "coalition",
        "peacekeepers", "migrants", "envoy", "consulate", "diplomacy", "asylum",
    ), (("Henrik Vos", "P"), ("United Nations", "O"), ("European Union", "O"),
        ("Hong Kong", "G"), ("Brussels", "G"))),
    _Topic("finance", "markets", 0.8, (
        "stocks", "investors", "earnings", "nasdaq", "dividend", "shares", "bonds",
        "inflation", "recession", "traders", "rally", "selloff", "futures", "valuation",
        "ipo", "yields", "volatility", "economists",
    ), (("Dana Whitfield", "P"), ("Wall Street", "G"), ("Federal Reserve", "O"),
        ("Dow Jones", "O"), ("Goldman Sachs", "O"))),
    _Topic("finance", "realestate", 0.5, (
        "mortgage", "homebuyers", "listing", "condo", "realtor", "renovation",
        "foreclosure", "landlord", "tenants", "apartment", "bungalow", "escrow",
        "zoning", "mansion", "lender", "rent", "housing", "bedroom",
    ), (("Carla Benton", "P"), ("Zillow", "O"), ("Manhattan", "G"), ("Miami", "G"),
        ("Freddie Mac", "O"))),
    _Topic("lifestyle", "lifestyleroyals", 0.5, (
        "duchess", "prince", "princess", "palace", "monarch", "coronation", "tiara",
        "queen", "throne", "duke", "royals", "heir", "christening", "sovereign",
        "courtiers", "jubilee", "corgis", "gown",
    ), (("Lady Clara Wynn", "P"), ("Buckingham Palace", "G"), ("Kensington Palace", "G"),
        ("Windsor Castle", "G"), ("Balmoral", "G"))),
    _Topic("foodanddrink", "recipes", 0.7, (
        "casserole", "skillet", "marinade", "cookies", "roasted", "garlic", "pumpkin",
        "dessert", "pasta", "baking", "oven", "brunch", "soup", "spice", "cinnamon",
        "thanksgiving", "leftovers", "pie",
    ), (("Nina Alvarez", "P"), ("Food Network", "O"), ("Whole Foods", "O"),
        ("Costco", "O"), ("New Orleans", "G"))),
    _Topic("travel", "travelnews", 0.6, (
        "airline", "passengers", "airport", "flights", "cruise", "luggage", "resort",
        "vacation", "itinerary", "destinations", "hotel", "boarding", "layover",
        "tourists", "passport", "beaches", "sightseeing", "jetlag",
    ), (("Tom Reyes", "P"), ("Delta Air Lines", "O"), ("LaGuardia", "G"), ("Hawaii", "G"),
        ("Las Vegas", "G"))),
    _Topic("weather", "weathertopstories", 0.6, (
        "forecast", "snowstorm", "blizzard", "rainfall", "meteorologist", "tornado",
        "hurricane", "temperatures", "frost", "flooding", "windchill", "drizzle",
        "thunderstorms", "humidity", "freeze", "snowfall", "gusts", "sleet",
    ), (("Jenna Kline", "P"), ("National Weather Service", "O"), ("Midwest", "G"),
        ("Chicago", "G"), ("Denver", "G"))),
    _Topic("autos", "autosnews", 0.6, (
        "sedan", "pickup", "horsepower", "dealership", "hybrid", "crossover", "suv",
        "mileage", "recall", "engine", "turbo", "convertible", "automaker", "minivan",
        "torque", "coupe", "transmission", "roadster",
    ), (("Alan Mercer", "P"), ("Ford", "O"), ("Tesla", "O"), ("Toyota", "O"),
        ("Detroit", "G"))),
    _Topic("health", "medical", 0.7, (
        "vaccine", "diagnosis", "cancer", "surgeon", "hospital", "patients", "clinical",
        "symptoms", "therapy", "prescription", "diabetes", "outbreak", "flu",
        "cholesterol", "dementia", "transplant", "antibiotics", "physicians",
    ), (("Omar Haddad", "P"), ("CDC", "O"), ("Mayo Clinic", "O"), ("FDA", "O"),
        ("Johns Hopkins", "O"))),
    _Topic("health", "fitness", 0.5, (
        "workout", "cardio", "treadmill", "squats", "stretching", "yoga", "pushups",
        "marathon", "dumbbell", "abs", "calories", "jogging", "pilates", "gym",
        "trainer", "endurance", "kettlebell", "lunges",
    ), (("Kayla Stone", "P"), ("Peloton", "O"), ("CrossFit", "O"), ("Boston", "G"),
        ("Planet Fitness", "O"))),
    _Topic("entertainment", "movienews", 0.8, (
        "sequel", "screenplay", "blockbuster", "director", "trailer", "cinema",
        "studio", "actress", "actor", "oscars", "filmmaker", "superhero", "remake",
        "prequel", "screening", "cameo", "animated", "premiere",
    ), (("Olivia Grant", "P"), ("Marvel", "O"), ("Disney", "O"), ("Hollywood", "G"),
        ("Warner Bros", "O"))),
    _Topic("entertainment", "musicnews", 0.6, (
        "album", "singer", "concert", "tour", "guitarist", "rapper", "lyrics", "ballad",
        "band", "songwriter", "playlist", "encore", "vinyl", "grammy", "duet",
        "setlist", "drummer", "mixtape",
    ), (("Jade Rivers", "P"), ("Billboard", "O"), ("Nashville", "G"), ("Coachella", "O"),
        ("Austin", "G"))),
    _Topic("entertainment", "tvnews", 0.9, (
        "episode", "finale", "sitcom", "showrunner", "streaming", "reboot", "spinoff",
        "cast", "binge", "primetime", "miniseries", "renewed", "contestant", "anchor",
        "pilot", "season", "sketch", "audition",
    ), (("Ben Carter", "P"), ("Netflix", "O"), ("HBO", "O"), ("NBC", "O"),
        ("Saturday Night Live", "O"))),
)

# Title templates: {t0}..{t3} are distinct topical words of the news's subcategory, {e}
# an entity name. Each uses two to four topical words.
_TITLES_PLAIN = (
    "Why the {t0} {t1} could reshape the {t2}",
    "How the {t0} and the {t1} changed this week",
    "{t0} report: what the new {t1} means for the {t2}",
    "Is this the year of the {t0}? What the {t1} says",
    "The big {t0} question: could the {t1} beat the {t2} {t3}?",
    "5 things to know about the {t0}, the {t1} and the {t2}",
    "First look: the {t0} that could change {t1} for good",
    "What's next for the {t0} after a big {t1} week",
    "{t0}, {t1} and {t2}: your guide to the week ahead",
    "New {t0} report says {t1} is back, and {t2} could follow",
    "The {t0} everyone is talking about, and why the {t1} matters",
    "Inside the {t0}: how a {t1} became the {t2} of the year",
)
_TITLES_ENTITY = (
    "{e} says the {t0} {t1} is next",
    "How {e}'s {t0} could change the {t1}",
    "{e} on the {t0}: we have a {t1} to win",
    "Why {e} is betting on the {t0} and the {t1}",
    "{e} and the {t0}: what we know about the {t1} {t2}",
    "After the {t0} and {t1}, {e} gets a new {t2}",
    "{e}'s {t0} {t1}: the latest on the {t2}",
    "Watch: {e} takes on the {t0} in a {t1} showdown",
)
_TITLE_PREFIXES = ("Report: ", "Analysis: ", "Opinion: ", "Breaking: ")
_TITLE_SUFFIXES = (", experts say", ", sources say", " (video)", ", and more")
_ABSTRACTS_PLAIN = (
    "The {a0} and the {a1} have been a big story this week, and more could come.",
    "Experts say the {a0} could make the {a1} more important than ever.",
    "Here is what to know about the {a0}, the {a1} and what comes next.",
    "It is not the first time a {a0} has changed the {a1}, but this one is different.",
    "Fans of the {a0} will want to see the new {a1} before the {a2} this weekend.",
    "The latest {a0} numbers show the {a1} is still on top.",
)
_ABSTRACTS_ENTITY = (
    "{e} said the {a0} was just the first step for the {a1}.",
    "{e} spoke about the {a0} and the {a2} in a new interview.",
)

# Every non-topical, non-entity word the templates use (and nothing else).
COMMON_WORDS: tuple[str, ...] = (
    "a", "about", "after", "ahead", "an", "analysis", "and", "back", "beat", "became",
    "been", "before", "betting", "big", "breaking", "but", "change", "changed", "come",
    "comes", "could", "different", "ever", "everyone", "experts", "fans", "first",
    "follow", "for", "gets", "good", "guide", "has", "have", "here", "how", "important",
    "in", "inside", "interview", "is", "it", "just", "know", "latest", "look", "make",
    "matters", "means", "more", "new", "next", "not", "numbers", "of", "on", "one",
    "opinion", "question", "report", "reshape", "said", "say", "says", "see", "show",
    "showdown", "sources", "spoke", "step", "still", "story", "takes", "talking",
    "than", "that", "the", "things", "this", "time", "to", "top", "video", "want",
    "was", "watch", "we", "week", "weekend", "what", "why", "will", "win", "year",
    "your",
)


# --------------------------------------------------------------------------- public API


def generate(out_dir: str | Path, *, scale: str = "demo", seed: int = 0) -> Path:
    """Write a synthetic MIND corpus (train/, dev/, truth.json) into ``out_dir``; return it.

    The same ``scale`` and ``seed`` always give byte-identical files. The corpus is written into
    a temp folder beside ``out_dir`` and renamed into place at the end, so a crash leaves the old
    corpus or the new one, never a mix of two seeds. An existing ``out_dir`` is replaced when it
    holds only a corpus that ``generate`` wrote; one holding anything else is refused (DataError).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    out = Path(out_dir)
    _check_replaceable(out)
    tmp = temp_dir_beside(out)
    try:
        _write_corpus(tmp, cfg=SCALES[scale], seed=seed)
        _swap_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


_CORPUS_FILES = frozenset({"truth.json", "train", "dev", "train/news.tsv", "train/behaviors.tsv",
                           "dev/news.tsv", "dev/behaviors.tsv"})


def _check_replaceable(out: Path) -> None:
    """Refuse an ``out`` that is not a folder, or holds files that ``generate`` does not write
    (temp files of an interrupted write aside): replacing it would delete them."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; name a new folder for the corpus")
    foreign = sorted(str(path.relative_to(out)) for path in out.rglob("*")
                     if str(path.relative_to(out)) not in _CORPUS_FILES
                     and not (path.name.startswith(".") and path.name.endswith(".tmp")))
    if foreign:
        raise DataError(f"{out}: holds files that demo-data did not write ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); name a new or empty folder")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished corpus ``tmp`` to ``out``; an old corpus there is moved aside first and
    removed after, so ``out`` is at every moment absent, the old corpus or the new one."""
    old = None
    if out.exists():
        old = tmp.with_name(tmp.name + ".old")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_corpus(out: Path, *, cfg: Scale, seed: int) -> None:
    params = PARAMS
    rng = np.random.default_rng(seed)

    news = _make_news(rng, cfg=cfg, params=params)
    users = _make_users(rng, cfg=cfg, params=params)
    history_offsets, history_news = _make_histories(rng, news=news, users=users, params=params)
    history = (history_offsets, history_news)
    counts: dict[str, int] = {}
    news_used = np.zeros(news.n, dtype=bool)
    users_used = np.zeros(users.n, dtype=bool)
    in_split = {name: np.zeros(news.n, dtype=bool) for name in ("train", "dev")}

    # Train: drawn and written one chunk of impressions at a time, so that its candidate arrays
    # (50M at MIND-large scale) are never all in memory.
    train_when = _who_and_when(rng, users=users, user_pool=np.arange(cfg.n_train_users),
                               n_impressions=cfg.n_train_impressions, days=np.arange(_TRAIN_DAYS))
    train_clicks = [0]

    def write_train(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            for first, chunk in _impression_chunks(rng, news=news, users=users, params=params, when=train_when):
                _write_behaviors(handle, chunk, first_id=first + 1, news=news, users=users, history=history)
                in_split["train"][chunk.news] = True
                train_clicks[0] += int(chunk.label.sum())

    atomic_write_with(out / "train" / "behaviors.tsv", write_train)
    returning = np.sort(rng.choice(cfg.n_train_users, cfg.n_dev_returning_users, replace=False))
    dev_users = np.concatenate([returning, cfg.n_train_users + np.arange(cfg.n_dev_new_users)])
    dev_when = _who_and_when(rng, users=users, user_pool=dev_users, n_impressions=cfg.n_dev_impressions,
                             days=np.array([_DEV_DAY]))
    dev = _joined([chunk for _, chunk in _impression_chunks(rng, news=news, users=users, params=params,
                                                            when=dev_when)])
    in_split["dev"][dev.news] = True
    news_lines = _render_news(rng, news=news, params=params)

    for split, split_user, clicks in (("train", train_when[0], train_clicks[0]),
                                      ("dev", dev.user, int(dev.label.sum()))):
        # A split's news.tsv lists exactly the news its behaviors mention.
        split_users = np.unique(split_user)
        in_split[split][history_news[_runs(history_offsets, split_users)]] = True
        news_used |= in_split[split]
        users_used[split_users] = True
        news_text = "".join(news_lines[i] for i in np.flatnonzero(in_split[split]).tolist())
        atomic_write_text(out / split / "news.tsv", news_text)
        if split == "dev":
            atomic_write_with(out / split / "behaviors.tsv", lambda tmp: _write_behaviors_file(
                tmp, dev, news=news, users=users, history=history))
        counts.update({
            f"{split}_impressions": int(len(split_user)),
            f"{split}_clicks": clicks,
            f"{split}_news": int(in_split[split].sum()),
            f"{split}_users": int(split_users.size),
        })
    counts["news"] = int(news_used.sum())
    counts["users"] = int(users_used.sum())
    counts["dev_users_in_train"] = int(np.isin(np.unique(dev.user), np.unique(train_when[0])).sum())
    counts["cold_users"] = int((np.diff(history_offsets)[users_used] == 0).sum())

    oracle, skipped = _oracle_metrics(dev, dev.p)
    oracle_interest, _ = _oracle_metrics(dev, dev.interest)
    truth = {
        "oracle": {k: round(v, 6) for k, v in oracle.items()},
        "oracle_interest_only": {k: round(v, 6) for k, v in oracle_interest.items()},
        "oracle_skipped_impressions": skipped,
        "topical_words": {t.subcategory: list(t.words) for t in _TOPICS},
        "common_words": list(COMMON_WORDS),
        "categories": _categories(),
        "entities": {t.subcategory: [label for label, _ in t.entities] for t in _TOPICS},
        "scale": cfg.name,
        "scale_config": dataclasses.asdict(cfg),
        "seed": int(seed),
        "counts": counts,
        "params": _rounded(dataclasses.asdict(params)),
        "user_interests": _user_interests(users, users_used),
    }
    atomic_write_json(out / "truth.json", truth)


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class _News:
    n: int
    ids: np.ndarray  # object array of "N123"
    subcat: np.ndarray  # int index into _TOPICS
    day: np.ndarray  # publish day, -history_days..6
    popularity: np.ndarray


@dataclass(frozen=True)
class _Users:
    n: int
    ids: np.ndarray  # object array of "U123"
    interest: np.ndarray  # (n, S) rows sum to 1
    main: np.ndarray  # (n, S) the Dirichlet part only (zero outside the main subcats)
    activity: np.ndarray  # relative rate of impressions


@dataclass(frozen=True)
class _Impressions:
    n: int
    user: np.ndarray
    time: np.ndarray  # seconds since 11/09/2019 00:00:00
    offsets: np.ndarray  # candidates of impression i are slots offsets[i]:offsets[i+1]
    news: np.ndarray
    p: np.ndarray
    interest: np.ndarray  # the interest term of p's logit alone: all that titles and histories can show
    label: np.ndarray  # bool


def _topic_weights() -> np.ndarray:
    w = np.array([t.weight for t in _TOPICS], dtype=np.float64)
    return w / w.sum()


def _categories() -> dict[str, list[str]]:
    cats: dict[str, list[str]] = {}
    for t in _TOPICS:
        cats.setdefault(t.category, []).append(t.subcategory)
    return cats


def _unique_ids(rng: np.random.Generator, *, n: int, prefix: str) -> np.ndarray:
    """MIND-looking ids ("N55528"): distinct random numbers, so ids carry no order signal."""
    numbers = rng.choice(3 * n, size=n, replace=False) + 1
    return np.array([f"{prefix}{k}" for k in numbers.tolist()], dtype=object)


def _make_news(rng: np.random.Generator, *, cfg: Scale, params: ClickParams) -> _News:
    n = cfg.n_news
    subcat = rng.choice(len(_TOPICS), size=n, p=_topic_weights())
    old = rng.random(n) < params.history_news_frac
    day = np.where(
        old,
        rng.integers(-params.history_days, 0, size=n),
        rng.integers(0, _DEV_DAY + 1, size=n),
    )
    popularity = np.exp(rng.normal(0.0, params.popularity_sigma, size=n))
    return _News(n=n, ids=_unique_ids(rng, n=n, prefix="N"), subcat=subcat, day=day,
                 popularity=popularity)


def _make_users(rng: np.random.Generator, *, cfg: Scale, params: ClickParams) -> _Users:
    """Sparse interests: Dirichlet mass on 1-3 subcategories (picked by topic weight)."""
    n, s = cfg.n_users, len(_TOPICS)
    k = rng.choice(3, size=n, p=np.array(params.interest_k_probs)) + 1
    # Weighted sampling of k distinct subcategories per user: Gumbel top-k.
    keys = np.log(_topic_weights())[None, :] + rng.gumbel(size=(n, s))
    top = np.argsort(-keys, axis=1, kind="stable")[:, :3]
    mass = rng.gamma(params.dirichlet_alpha, size=(n, 3))
    mass[np.arange(3)[None, :] >= k[:, None]] = 0.0
    mass /= mass.sum(axis=1, keepdims=True)
    main = np.zeros((n, s))
    np.put_along_axis(main, top, mass, axis=1)
    main *= 1.0 - params.background
    interest = main + params.background / s
    activity = np.exp(rng.normal(0.0, 1.0, size=n))
    return _Users(n=n, ids=_unique_ids(rng, n=n, prefix="U"), interest=interest, main=main,
                  activity=activity)


class _Pool:
    """Popularity-weighted draws of one news item from each of many groups at once.

    Groups (e.g. "subcategory s among news published in day d's window") are stored as
    consecutive runs of one array with a global cumulative weight, so a batch of draws
    is a single ``searchsorted``.
    """

    def __init__(self, groups: list[np.ndarray], weight: np.ndarray):
        sizes = np.array([g.size for g in groups], dtype=np.int64)
        self.items = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        self.stop = np.cumsum(sizes)
        self.start = self.stop - sizes
        self.cum = np.cumsum(weight[self.items])
        self.base = np.where(self.start > 0, self.cum[np.maximum(self.start - 1, 0)], 0.0)
        self.total = np.where(sizes > 0, self.cum[np.maximum(self.stop - 1, 0)] - self.base, 0.0)
        self.empty = sizes == 0

    def draw(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One item per entry of ``group`` (which must be non-empty), ``u`` uniform in [0, 1)."""
        target = self.base[group] + u * self.total[group]
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.clip(pos, self.start[group], self.stop[group] - 1)
        return self.items[pos]


def _draw_rows(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each entry of ``rows`` draw a column from that row's cumulative distribution."""
    u = rng.random(rows.size)
    out = np.empty(rows.size, dtype=np.int64)
    step = 200_000  # bounds the (chunk, S) temporary
    for lo in range(0, rows.size, step):
        hi = min(lo + step, rows.size)
        out[lo:hi] = (cum[rows[lo:hi]] < u[lo:hi, None]).sum(axis=1)
    return np.minimum(out, cum.shape[1] - 1)


def _interest_cdf(users: _Users) -> np.ndarray:
    cum = np.cumsum(users.interest, axis=1)
    cum /= cum[:, -1:]
    cum[:, -1] = 1.0
    return cum


def _first_unique(owner: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Indices of the first occurrence of each (owner, item) pair, in their original order."""
    _, first = np.unique(owner.astype(np.int64) * n_items + item, return_index=True)
    return np.sort(first)


def _runs(offsets: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Positions of the CSR runs ``offsets[o]:offsets[o + 1]`` of every owner, concatenated."""
    lengths = offsets[owners + 1] - offsets[owners]
    starts = np.repeat(offsets[owners], lengths)
    return starts + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _truncate_runs(owner: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mask keeping the first ``keep[o]`` entries of each run of equal (sorted) ``owner``."""
    if owner.size == 0:
        return np.zeros(0, dtype=bool)
    run_start = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    run_len = np.diff(np.r_[run_start, owner.size])
    rank = np.arange(owner.size) - np.repeat(run_start, run_len)
    return rank < keep[owner]


def _make_histories(
    rng: np.random.Generator, *, news: _News, users: _Users, params: ClickParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user click histories from pre-period news, oldest first (CSR: offsets, news).

    Drawn ``_HISTORY_USER_CHUNK`` users at a time, so that the oversampled draws (30M at MIND-large
    scale, several temporaries each) are never all in memory; a corpus of one chunk draws exactly
    what drawing it whole would."""
    s = len(_TOPICS)
    length = np.exp(rng.normal(math.log(params.history_median), params.history_sigma, users.n))
    length = np.clip(np.rint(length), 1, params.history_max).astype(np.int64)
    length[rng.random(users.n) < params.cold_user_frac] = 0
    # Oversample, then drop repeats and cut back to the target length.
    n_draw = np.where(length > 0, np.ceil(length * 1.5).astype(np.int64) + 5, 0)
    cdf = _interest_cdf(users)
    old = news.day < 0
    pool = _Pool([np.flatnonzero(old & (news.subcat == k)) for k in range(s)]
                 + [np.flatnonzero(old)], news.popularity)
    items, counts = [], []
    for lo in range(0, users.n, _HISTORY_USER_CHUNK):
        hi = min(lo + _HISTORY_USER_CHUNK, users.n)
        owner = np.repeat(np.arange(lo, hi), n_draw[lo:hi])
        explore = rng.random(owner.size) < params.history_explore
        subcat = np.where(
            explore,
            rng.choice(s, size=owner.size, p=_topic_weights()),
            _draw_rows(rng, cdf, owner),
        )
        subcat = np.where(pool.empty[subcat], s, subcat)
        item = pool.draw(subcat, rng.random(owner.size))
        first = _first_unique(owner, item, news.n)
        owner, item = owner[first], item[first]
        keep = _truncate_runs(owner, length)
        owner, item = owner[keep], item[keep]
        order = np.lexsort((np.arange(owner.size), news.day[item], owner))
        items.append(item[order])
        counts.append(np.bincount(owner - lo, minlength=hi - lo))
    offsets = np.r_[0, np.cumsum(np.concatenate(counts) if counts else [])].astype(np.int64)
    return offsets, (np.concatenate(items) if items else np.zeros(0, dtype=np.int64))


def _who_and_when(rng: np.random.Generator, *, users: _Users, user_pool: np.ndarray, n_impressions: int,
                  days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user, day and time of each impression of one split, sorted by time; every user of
    ``user_pool`` gets one or more, the rest are drawn by activity."""
    w = users.activity[user_pool]
    extra = rng.choice(user_pool, size=n_impressions - user_pool.size, p=w / w.sum())
    user = np.concatenate([user_pool, extra])
    day = rng.choice(days, size=n_impressions)
    hour_p = np.array(_HOUR_WEIGHTS, dtype=np.float64)
    hour = rng.choice(24, size=n_impressions, p=hour_p / hour_p.sum())
    time = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, size=n_impressions)
    order = np.argsort(time, kind="stable")
    return user[order], day[order], time[order]


def _candidate_pool(news: _News, params: ClickParams) -> _Pool:
    """Per impression day, each subcategory (and "any") among the recent news."""
    s = len(_TOPICS)
    groups = []
    for d in range(_DEV_DAY + 1):
        # Only news of the impression period: history news (day < 0) never reappears.
        recent = (news.day <= d) & (news.day > d - params.candidate_window_days) & (news.day >= 0)
        groups += [np.flatnonzero(recent & (news.subcat == k)) for k in range(s)]
        groups.append(np.flatnonzero(recent))
    return _Pool(groups, news.popularity)


def _impression_chunks(
    rng: np.random.Generator,
    *,
    news: _News,
    users: _Users,
    params: ClickParams,
    when: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Iterator[tuple[int, _Impressions]]:
    """The candidates and clicks of a split's impressions (``when``: ``_who_and_when``), drawn
    ``_IMPRESSION_CHUNK`` impressions at a time: (the chunk's first impression number, the chunk).
    A split of one chunk draws exactly what drawing it whole would."""
    all_users, all_days, all_times = when
    cdf = _interest_cdf(users)
    pool = _candidate_pool(news, params)
    for lo in range(0, len(all_users), _IMPRESSION_CHUNK):
        hi = min(lo + _IMPRESSION_CHUNK, len(all_users))
        yield lo, _draw_candidates(rng, news=news, users=users, params=params, cdf=cdf, pool=pool,
                                   user=all_users[lo:hi], day=all_days[lo:hi], time=all_times[lo:hi])


def _draw_candidates(rng: np.random.Generator, *, news: _News, users: _Users, params: ClickParams,
                     cdf: np.ndarray, pool: _Pool, user: np.ndarray, day: np.ndarray,
                     time: np.ndarray) -> _Impressions:
    s = len(_TOPICS)
    n_impressions = len(user)
    # How many candidates, and how many of them come from the user's interests.
    size = np.exp(rng.normal(math.log(params.impression_median), params.impression_sigma,
                             n_impressions))
    size = np.clip(np.rint(size), params.impression_min, params.impression_max).astype(np.int64)
    matched_frac = rng.uniform(params.matched_frac_low, params.matched_frac_high, n_impressions)
    n_draw = np.ceil(size * 1.5).astype(np.int64) + 5
    owner = np.repeat(np.arange(n_impressions), n_draw)
    matched = rng.random(owner.size) < matched_frac[owner]
    subcat = np.where(matched, _draw_rows(rng, cdf, user[owner]), s)

    group = day[owner] * (s + 1) + subcat
    group = np.where(pool.empty[group], day[owner] * (s + 1) + s, group)
    item = pool.draw(group, rng.random(owner.size))
    first = _first_unique(owner, item, news.n)
    owner, item = owner[first], item[first]
    keep = _truncate_runs(owner, size)
    owner, item = owner[keep], item[keep]
    offsets = np.r_[0, np.cumsum(np.bincount(owner, minlength=n_impressions))]

    # Clicks from the known model, then one forced click where none was drawn.
    interest = params.a * users.interest[user[owner], news.subcat[item]]
    logit = interest + params.b * np.log(news.popularity[item]) + params.c
    p = 1.0 / (1.0 + np.exp(-logit))
    label = rng.random(item.size) < p
    clicks = np.add.reduceat(label.astype(np.int64), offsets[:-1])
    none = np.flatnonzero(clicks == 0)
    if none.size:
        cum = np.cumsum(p)
        lo = np.where(offsets[none] > 0, cum[np.maximum(offsets[none] - 1, 0)], 0.0)
        hi = cum[offsets[none + 1] - 1]
        pos = np.searchsorted(cum, lo + rng.random(none.size) * (hi - lo), side="right")
        label[np.clip(pos, offsets[none], offsets[none + 1] - 1)] = True
    return _Impressions(n=n_impressions, user=user, time=time, offsets=offsets, news=item,
                        p=p, interest=interest, label=label)


def _joined(chunks: list[_Impressions]) -> _Impressions:
    """One split's chunks as one ``_Impressions`` (the dev split, whose oracle needs it whole)."""
    if len(chunks) == 1:
        return chunks[0]
    starts = np.cumsum([0] + [c.offsets[-1] for c in chunks[:-1]])
    offsets = np.concatenate([[0]] + [c.offsets[1:] + start for c, start in zip(chunks, starts)])
    return _Impressions(n=sum(c.n for c in chunks), offsets=offsets,
                        **{k: np.concatenate([getattr(c, k) for c in chunks])
                           for k in ("user", "time", "news", "p", "interest", "label")})


# --------------------------------------------------------------------------- rendering


def _url_code(number: int) -> str:
    """Seven upper-case base-36 characters, distinct per number, like MSN's "AAGH0ET"."""
    value = (number * 2_654_435_761 + 12_345) % 36**5  # odd multiplier mod 36**5: a bijection
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    code = ""
    for _ in range(5):
        value, r = divmod(value, 36)
        code = digits[r] + code
    return "AA" + code


def _entity_json(text: str, entities: list[tuple[str, str, str, float]]) -> str:
    """MIND's entity list: key order and separators exactly as in the released files."""
    out = []
    for label, etype, qid, confidence in entities:
        offsets, at = [], text.find(label)
        while at >= 0:
            offsets.append(at)
            at = text.find(label, at + len(label))
        if offsets:
            out.append({"Label": label, "Type": etype, "WikidataId": qid,
                        "Confidence": confidence, "OccurrenceOffsets": offsets,
                        "SurfaceForms": [label]})
    return json.dumps(out, ensure_ascii=False)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _fix_articles(text: str) -> str:
    """"a album" -> "an album": templates say "a {word}" without knowing the word."""
    return _A_BEFORE_VOWEL.sub(r"\1n ", text)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _render_news(rng: np.random.Generator, *, news: _News, params: ClickParams) -> list[str]:
    """One news.tsv line per news item (with its "\\n"), in internal index order."""
    n = news.n
    qids: list[list[str]] = []
    k = 0
    for t in _TOPICS:
        qids.append([f"Q{9_000_000 + k + j}" for j in range(len(t.entities))])
        k += len(t.entities)
    # All random choices up front, vectorised; the loop below only formats strings.
    n_words = np.array([len(_TOPICS[c].words) for c in news.subcat])
    word_order = np.argsort(
        np.where(np.arange(25)[None, :] < n_words[:, None], rng.random((n, 25)), 2.0), axis=1
    )[:, :8]
    with_entity = rng.random(n) < params.title_entity_prob
    title_tpl = np.where(with_entity, rng.integers(0, len(_TITLES_ENTITY), n),
                         rng.integers(0, len(_TITLES_PLAIN), n))
    n_entities = np.array([len(t.entities) for t in _TOPICS])[news.subcat]
    entity = (rng.random(n) * n_entities).astype(np.int64)
    prefix = np.where(rng.random(n) < 0.12, rng.integers(0, len(_TITLE_PREFIXES), n), -1)
    suffix = np.where(rng.random(n) < 0.15, rng.integers(0, len(_TITLE_SUFFIXES), n), -1)
    n_sent = np.where(rng.random(n) < params.empty_abstract_prob, 0,
                      1 + (rng.random(n) < 0.5).astype(np.int64))
    abs_tpl = rng.integers(0, len(_ABSTRACTS_PLAIN) + len(_ABSTRACTS_ENTITY), (n, 2))
    abs_tpl[:, 1] = np.where(abs_tpl[:, 1] == abs_tpl[:, 0],
                             (abs_tpl[:, 1] + 1) % (len(_ABSTRACTS_PLAIN) + len(_ABSTRACTS_ENTITY)),
                             abs_tpl[:, 1])
    confidence = np.round(rng.uniform(0.8, 1.0, (n, 2)), 3)

    lines = []
    abstracts = _ABSTRACTS_PLAIN + _ABSTRACTS_ENTITY
    for i in range(n):
        topic = _TOPICS[news.subcat[i]]
        words = [topic.words[j] for j in word_order[i]]
        label, etype = topic.entities[entity[i]]
        ent = (label, etype, qids[news.subcat[i]][entity[i]])
        if with_entity[i]:
            title = _TITLES_ENTITY[title_tpl[i]].format(e=label, t0=words[0], t1=words[1],
                                                        t2=words[2])
        else:
            title = _TITLES_PLAIN[title_tpl[i]].format(t0=words[0], t1=words[1], t2=words[2],
                                                       t3=words[3])
        n_title = len(title.split())
        if prefix[i] >= 0 and n_title < 16 and ":" not in title:
            title = _TITLE_PREFIXES[prefix[i]] + title
            n_title += 1
        if suffix[i] >= 0 and n_title + 2 <= 16:
            title = title.rstrip("?") + _TITLE_SUFFIXES[suffix[i]]
        title = _capitalise(_fix_articles(title))
        sentences = [
            _capitalise(abstracts[abs_tpl[i, j]].format(e=label, a0=words[4 + j], a1=words[6],
                                                        a2=words[7]))
            for j in range(n_sent[i])
        ]
        abstract = _fix_articles(" ".join(sentences))
        title_ents = _entity_json(title, [ent + (float(confidence[i, 0]),)])
        abstract_ents = _entity_json(abstract, [ent + (float(confidence[i, 1]),)])
        number = int(news.ids[i][1:])
        url = f"https://assets.msn.com/labs/mind/{_url_code(number)}.html"
        lines.append("\t".join((news.ids[i], topic.category, topic.subcategory, title,
                                abstract, url, title_ents, abstract_ents)) + "\n")
    return lines


def _format_time(seconds: np.ndarray) -> list[str]:
    """MIND's timestamps: "11/15/2019 7:11:50 AM" (12-hour clock, hour not zero-padded)."""
    out = []
    for t in seconds.tolist():
        day, rest = divmod(t, 86_400)
        hour, rest = divmod(rest, 3_600)
        minute, second = divmod(rest, 60)
        h12 = hour % 12 or 12
        ampm = "AM" if hour < 12 else "PM"
        out.append(f"11/{_FIRST_DAY + day:02d}/2019 {h12}:{minute:02d}:{second:02d} {ampm}")
    return out


def _write_behaviors_file(path: Path, imps: _Impressions, *, news: _News, users: _Users,
                          history: tuple[np.ndarray, np.ndarray]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        _write_behaviors(handle, imps, first_id=1, news=news, users=users, history=history)


def _write_behaviors(handle: TextIO, imps: _Impressions, *, first_id: int, news: _News, users: _Users,
                     history: tuple[np.ndarray, np.ndarray]) -> None:
    """behaviors.tsv rows of ``imps`` (impression ids from ``first_id``), rendered and written
    ``_RENDER_CHUNK`` rows at a time (the text of a 2M-row split is never held whole)."""
    offsets, clicked = history
    slot_names = [[f"{nid}-0" for nid in news.ids.tolist()], [f"{nid}-1" for nid in news.ids.tolist()]]
    for lo in range(0, imps.n, _RENDER_CHUNK):
        hi = min(lo + _RENDER_CHUNK, imps.n)
        first, last = int(imps.offsets[lo]), int(imps.offsets[hi])
        slot = [slot_names[label][item] for item, label in
                zip(imps.news[first:last].tolist(), imps.label[first:last].astype(np.int64).tolist())]
        times = _format_time(imps.time[lo:hi])
        user_idx = imps.user[lo:hi].tolist()
        history_text = {u: " ".join(news.ids[clicked[offsets[u]:offsets[u + 1]]].tolist())
                        for u in set(user_idx)}
        off = (imps.offsets[lo:hi + 1] - first).tolist()
        user_ids = users.ids[imps.user[lo:hi]].tolist()
        handle.write("".join(
            f"{first_id + lo + i}\t{user_ids[i]}\t{times[i]}\t{history_text[user_idx[i]]}\t"
            f"{' '.join(slot[off[i]:off[i + 1]])}\n"
            for i in range(hi - lo)
        ))


# --------------------------------------------------------------------------- truth


def _oracle_metrics(imps: _Impressions, scores: np.ndarray) -> tuple[dict[str, float], int]:
    """Mean per-impression metrics of ``scores`` (the true p, or its interest term alone) against
    the sampled clicks, and how many impressions were skipped because they lack a click or a
    non-click (AUC is undefined there).

    The interest-only figure is the ceiling of a model that reads titles and click histories:
    the popularity term is hidden from both."""
    result = evaluate_flat(imps.label, scores, imps.offsets)
    return {k: v for k, v in result.as_dict().items() if k in METRIC_NAMES}, result.skipped


def _user_interests(users: _Users, used: np.ndarray) -> dict[str, dict[str, float]]:
    """Each listed user's main subcategories with their true ``interest`` value (as used in p).

    Subcategories that only carry the uniform background are left out.
    """
    names = [t.subcategory for t in _TOPICS]
    out: dict[str, dict[str, float]] = {}
    for u in np.flatnonzero(used).tolist():
        cols = np.flatnonzero(users.main[u])
        out[users.ids[u]] = {names[c]: round(float(users.interest[u, c]), 6) for c in cols}
    return out


def _rounded(obj):
    """Floats rounded to 6 decimals, tuples as lists, recursively (truth.json is JSON)."""
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    return obj


def read_truth(root: str | Path | None) -> dict | None:
    """The truth.json of a corpus this module generated (``root`` holds train/ and dev/), or None
    for any other corpus (or an unreadable file: the figures it feeds are optional)."""
    path = Path(root) / "truth.json" if root is not None else None
    if path is None or not path.is_file():
        return None
    try:
        truth = read_json(path)  # regular files only, size and nesting capped
    except (OSError, ValueError):  # DataError is a ValueError
        return None
    return truth if isinstance(truth, dict) else None
