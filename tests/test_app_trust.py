"""Can the studio's pictures be trusted (issue 28, app/studio/trust.py): the Attention page's removal test of
the chosen candidate (its score without the two most-attended words, two random words and the top two by
gradients, with the gradient attribution beside the attention shading), and the beyond-accuracy figures of
the model beside popularity's (Overview) or beside model B's (Compare), each the number nram_core computes.

The helpers are driven through the app's own sidebar (``context.build_sidebar``) on the shipped demo model
and the demo corpus; the second model of Compare is the shipped one with its word embeddings perturbed.
"""
from __future__ import annotations

import doctest
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from conftest import recommit_best  # noqa: E402

from studio_apptest import APP, CTX_KEY, SHIPPED, TIMEOUT, app_home, assert_clean, goto  # noqa: E402

NUMBER = r"[+-]\d+\.\d{3}"


def _script() -> None:
    """One page's worth of trust.py, chosen by ``session_state["trust_view"]``, under the app's sidebar."""
    import numpy as np
    import streamlit as st

    from studio import cache, context, registry, trust

    registry.ensure_demo_corpus()  # as main.py does on a first start
    st.session_state[context.CTX_KEY] = context.build_sidebar()
    view = st.session_state.get("trust_view", "overview")
    if view == "overview":
        trust.overview_beyond(context.need_split())
    elif view == "attention":
        c = context.need_user()
        rec = c.for_user(c.rec)
        recent = np.asarray(c.history, dtype=np.int64)[-c.info.model_config.history_len:]
        candidate = int(cache.rank_impression(c.rec, int(c.impressions[-1])).rows[0])
        st.session_state["trust_candidate"] = candidate
        trust.faithfulness_section(c, rec, recent, candidate)
        st.session_state["trust_line"] = trust.faithfulness_line(c, rec, recent, candidate)
    elif view == "warm":  # what context.warm_up's thread does, here in the script
        c = context.need_model()
        trust.warm_up(c, c.rec, beyond=True)
        trust.overview_beyond(c)
    elif view == "compare":
        c = context.need_user()
        second = next(m for m in c.models if m.path.name == st.session_state.get("trust_second", "perturbed"))
        trust.compare_beyond(c, second, c.recommender_for(second))


def _perturbed_copy(out: Path) -> Path:
    """The shipped model with noise on its word embeddings: another model of the same family."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(SHIPPED, out)
    weights = load_file(out / "model.safetensors")
    name = "news_encoder.embedding.weight"
    g = torch.Generator().manual_seed(0)
    weights[name] = weights[name] + 0.5 * weights[name].std() * torch.randn(weights[name].shape, generator=g)
    save_file(weights, out / "model.safetensors")
    recommit_best(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    if not (SHIPPED / "model.safetensors").is_file():
        pytest.skip("needs the shipped assets/demo_model")
    root = tmp_path_factory.mktemp("trust_runs")
    _perturbed_copy(root / "perturbed")
    return root


@pytest.fixture(scope="module", autouse=True)
def studio_home(tmp_path_factory, runs):
    home = tmp_path_factory.mktemp("nram_home")
    with app_home(home, NRAM_RUNS_DIRS=str(runs)):
        yield home


@pytest.fixture(autouse=True)
def isolated_nram_home(studio_home, monkeypatch):
    """Overrides tests/conftest.py's per-test home: these tests share one app home, as one app would."""
    monkeypatch.setenv("NRAM_HOME", str(studio_home))
    return studio_home


def view(name: str, *, user: bool = False, model: Path = SHIPPED) -> AppTest:
    """The script on the demo corpus's dev split and ``model`` (the shipped one); ``user``: a user with a
    history of five clicks or more and a scorable impression picked."""
    at = AppTest.from_function(_script, default_timeout=TIMEOUT)
    at.session_state["trust_view"] = "overview"
    at.run()
    assert_clean(at)
    chosen = next(m.key for m in at.session_state[CTX_KEY].models if m.path.resolve() == model.resolve())
    at.selectbox(key="model").set_value(chosen).run()
    at.radio(key="split").set_value("dev").run()
    if user:
        users = at.session_state[CTX_KEY].users
        at.selectbox(key="user").set_value(users[(users["history"] >= 5) & users["scorable"]]["user"].iloc[0]).run()
    at.session_state["trust_view"] = name
    at.run()
    assert_clean(at)
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in [*at.markdown, *at.caption, *at.info])


def frame(at: AppTest, column: str):
    return next(df.value for df in at.dataframe if column in df.value.columns)


def _direct(c, rec_path: Path | None = None) -> tuple:
    """The sidebar's model and a second model, the dev split and the train split, read outside the app."""
    from nram_core.checkpoint import load_run

    train_split = c.info.load_split("train", Path(c.train_folder))
    model = load_run(c.model.path, device="cpu").model.eval()
    other = load_run(rec_path, device="cpu").model.eval() if rec_path is not None else None
    return model, other, c.split, train_split


# ---- the Attention page's removal test -------------------------------------------------------------
def test_the_statement_gives_the_scores_without_the_attended_random_and_gradient_words():
    from nram_core.faithfulness import pair_removal
    from studio.trust import markdown_text

    at = view("attention", user=True)
    c = at.session_state[CTX_KEY]
    candidate = at.session_state["trust_candidate"]
    recent = np.asarray(c.history, dtype=np.int64)[-c.info.model_config.history_len:]
    rec = c.for_user(c.rec)
    expected = pair_removal(rec.model, c.split.news.tokens[candidate], rec.user_vector(recent), k=2)
    exp = rec.explain(recent, np.array([candidate]))
    assert expected.score == pytest.approx(float(exp.scores[0]), abs=1e-4)  # the page's score, the same model
    statement = next(m.value for m in at.markdown if "most-attended words" in m.value)
    numbers = [float(x) for x in re.findall(NUMBER, statement)]
    # score, then per method (attention, random, gradients): the score without the words and the change
    assert numbers[:7] == pytest.approx(
        [expected.score] + [v for m in ("attention", "random", "gradients")
                            for v in (expected.without[m], expected.without[m] - expected.score)], abs=1e-3)
    words = [c.words[t] if t else "" for t in c.split.news.tokens[candidate]]
    for method in ("attention", "random", "gradients"):
        assert markdown_text(", ".join(f"'{words[p]}'" for p in expected.removed[method])) in statement
    assert markdown_text(at.session_state["trust_line"]).endswith(statement)  # the export's line says the same
    # the attribution beside the shading: both titles shaded, and the per-word chart
    real = [w for w in words if w]
    shaded = [m.value for m in at.markdown if "<span title=" in m.value]
    assert len(shaded) == 2 and all(all(f">{html.escape(w)}</span>" in s for w in real) for s in shaded)
    titles = [re.findall(r"<span title='([^']+)'", s) for s in shaded]
    assert [float(t) for t in titles[1]] == pytest.approx(expected.gradients[:len(real)].tolist(), abs=1e-4)
    specs = [json.loads(ch.proto.spec) for ch in at.get("vega_lite_chart")]
    assert [[part["title"] for part in spec.get("hconcat", [])] for spec in specs] == [
        ["attention weight", "gradient attribution"]]


def test_the_removal_test_is_computed_once_per_model_history_and_candidate(monkeypatch):
    from nram_core import faithfulness

    at = view("attention", user=True)
    before = next(m.value for m in at.markdown if "most-attended words" in m.value)

    def refuse(*args, **kwargs):
        raise AssertionError("pair_removal computed again")

    monkeypatch.setattr(faithfulness, "pair_removal", refuse)
    at.run()  # a rerun that changes nothing (as a head or a toggle would): from the cache
    assert_clean(at)
    assert next(m.value for m in at.markdown if "most-attended words" in m.value) == before


def test_faithfulness_text_says_which_words_move_the_score():
    from nram_core.faithfulness import PairRemoval
    from studio.trust import faithfulness_text

    words = ["storm", "hits", "the", "coast", ""]

    def removal(without: dict, k: int = 2) -> PairRemoval:
        return PairRemoval(attention=np.array([0.5, 0.2, 0.1, 0.2, 0.0]), gradients=np.array([1.0, 0.1, 0.0, 0.5, 0.0]),
                           score=1.0, k=k, removed={"attention": [0, 1], "random": [2, 3], "gradients": [0, 3]},
                           without=without)

    faithful = faithfulness_text(removal({"attention": 0.2, "random": 0.9, "gradients": -0.5}), words)
    assert "'storm', 'hits'" in faithful and "'the', 'coast'" in faithful and "'storm', 'coast'" in faithful
    assert "from +1.000 to +0.200 (-0.800)" in faithful and "to +0.900 (-0.100)" in faithful
    assert "points at words the score depends on" in faithful
    assert "gradients find words that move it further" in faithful
    unfaithful = faithfulness_text(removal({"attention": 0.95, "random": 0.5, "gradients": 0.1}), words)
    assert "no more than removing random words" in unfaithful and "does not show" in unfaithful
    short = faithfulness_text(removal({"attention": None, "random": None, "gradients": None}, k=3), words)
    assert short.startswith("The title has 4 words: removing 3 would leave too few")


# ---- beyond accuracy -------------------------------------------------------------------------------
def test_the_overview_shows_the_models_figures_beside_popularitys():
    from nram_core.baselines import Popularity
    from nram_core.beyond import FIGURES, beyond_accuracy
    from nram_core.scoring import encode_all_news

    at = view("overview")
    assert not at.dataframe  # nothing computed on a first view: the Overview builds no model unasked
    at.button(key="ov_beyond_compute").click().run()
    assert_clean(at)
    c = at.session_state[CTX_KEY]
    table = frame(at, "popularity")
    assert table["figure"].tolist() == list(FIGURES)
    model, _, dev, train = _direct(c)
    vectors = encode_all_news(model, dev).float().numpy()
    mine = beyond_accuracy(model, dev, train, top=10, vectors=vectors)
    popular = beyond_accuracy(Popularity(train), dev, train, top=10, vectors=vectors)
    for i, name in enumerate(FIGURES):
        assert table[c.model.label][i] == pytest.approx(mine[name], abs=1e-6), name
        assert table["popularity"][i] == pytest.approx(popular[name], abs=1e-6), name
    assert mine["personalisation"] > popular["personalisation"]  # the trained model is the more personal
    assert "more personal than popularity" in texts(at)
    # computed once: a new session shows the table without being asked
    again = view("overview")
    assert frame(again, "popularity").equals(table)


def test_a_computation_under_way_is_awaited_not_offered_again(monkeypatch):
    from studio import cache

    at = view("overview")
    at.radio(key="split").set_value("train").run()  # figures no other test computes
    c = at.session_state[CTX_KEY]
    me = cache.recommender_identity(*c.recommender_args(c.model))
    train = (c.train_folder, c.model.key, c.model.mtime_ns)
    assert "ov_beyond_compute" in [b.key for b in at.button]
    monkeypatch.setattr(cache, "_beyond_running", {cache.beyond_key(me, train, top=10, ruler=me)})  # the warm-up's
    at.run()
    assert_clean(at)
    assert "Computing the beyond-accuracy figures of this split" in texts(at)
    assert "ov_beyond_compute" not in [b.key for b in at.button]


def test_compare_shows_model_as_figures_beside_model_bs(runs):
    from nram_core.beyond import FIGURES, beyond_accuracy
    from nram_core.scoring import encode_all_news

    at = view("compare", user=True)
    at.button(key="compare_beyond_compute").click().run()
    assert_clean(at)
    c = at.session_state[CTX_KEY]
    table = frame(at, "B")
    model, other, dev, train = _direct(c, runs / "perturbed")
    vectors = encode_all_news(model, dev).float().numpy()  # one ruler: A's news vectors measure both
    a = beyond_accuracy(model, dev, train, top=10, vectors=vectors)
    b = beyond_accuracy(other, dev, train, top=10, vectors=vectors)
    for i, name in enumerate(FIGURES):
        assert table["A"][i] == pytest.approx(a[name], abs=1e-6), name
        assert table["B"][i] == pytest.approx(b[name], abs=1e-6), name
    assert a != b
    assert "with A (" in texts(at)


def test_the_warm_up_computes_the_overview_figures(runs):
    at = view("warm", model=runs / "perturbed")
    table = frame(at, "popularity")  # drawn without a click: the warm-up computed both columns
    at.session_state["trust_view"] = "overview"
    at.run()
    assert frame(at, "popularity").equals(table)


# ---- the pages themselves ---------------------------------------------------------------------------
def _computed(at: AppTest, key: str, column: str):
    """The beyond-accuracy table of a page: drawn already when this process computed it, else on its button."""
    if not any(column in df.value.columns for df in at.dataframe):
        at.button(key=key).click().run()
        assert_clean(at)
    return frame(at, column)


def test_the_pages_and_the_export_carry_it(runs):
    from studio import cache
    from studio.export import view_report
    from studio.trust import faithfulness_line, markdown_text

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert_clean(at)
    shipped = next(m.key for m in at.session_state[CTX_KEY].models if m.path.resolve() == SHIPPED.resolve())
    at.selectbox(key="model").set_value(shipped).run()
    at.radio(key="split").set_value("dev").run()
    users = at.session_state[CTX_KEY].users
    at.selectbox(key="user").set_value(users[(users["history"] >= 5) & users["scorable"]]["user"].iloc[0]).run()

    goto(at, "attention")
    assert_clean(at)
    c = at.session_state[CTX_KEY]
    candidate = int(at.selectbox(key="att_candidate").value)
    recent = np.asarray(c.history, dtype=np.int64)[-c.info.model_config.history_len:]
    line = faithfulness_line(c, c.for_user(c.rec), recent, candidate)
    assert "most-attended words" in line and markdown_text(line) in [m.value for m in at.markdown]
    assert any("gradient attribution" in [p["title"] for p in json.loads(ch.proto.spec).get("hconcat", [])]
               for ch in at.get("vega_lite_chart"))

    imp = int(c.impressions[-1])
    ranked = cache.rank_impression(c.rec, imp)
    exported = view_report(c, imp, ranked)
    top_line = faithfulness_line(c, c.for_user(c.rec), recent, int(ranked.rows[0]))
    assert "most-attended words" in top_line and html.escape(top_line) in exported

    goto(at, "overview")
    assert list(_computed(at, "ov_beyond_compute", "popularity").columns[:3]) == ["figure", c.model.label,
                                                                                  "popularity"]
    goto(at, "compare")
    at.selectbox(key="compare_model").set_value(str((runs / "perturbed").resolve())).run()
    assert list(_computed(at, "compare_beyond_compute", "B").columns[:3]) == ["figure", "A", "B"]


@pytest.mark.slow  # trains a tiny LSTUR run (about 15 s)
def test_another_family_says_the_test_is_nrams_and_compares_beside_nram(runs):
    import os
    import subprocess
    import sys

    from nram_core.beyond import FIGURES
    from studio.export import view_report
    from studio.registry import ensure_demo_corpus

    corpus, _ = ensure_demo_corpus()
    out = runs / "lstur"
    done = subprocess.run([sys.executable, "-m", "nram_core", "train", "--data", str(corpus), "--model", "lstur",
                           "--out", str(out), "--preset", "demo", "--epochs", "1", "--max-impressions", "100",
                           "--max-dev-impressions", "50", "--word-vectors", "none", "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]

    at = view("attention", user=True, model=out)
    assert "is NRAM's so far: this LSTUR model is not measured" in texts(at)
    assert not [m for m in at.markdown if "most-attended words" in m.value]
    c = at.session_state[CTX_KEY]
    imp = int(c.impressions[-1])
    assert "is NRAM&#x27;s so far: this LSTUR model" in view_report(c, imp, c.rec.rank_impression(imp))

    at = view("compare", user=True)  # A: the shipped NRAM; B: the LSTUR run
    at.session_state["trust_second"] = "lstur"
    at.run()
    at.button(key="compare_beyond_compute").click().run()
    assert_clean(at)
    table = frame(at, "B")
    assert table["figure"].tolist() == list(FIGURES)
    values = dict(zip(table["figure"], table["B"]))
    assert values["intra_list_diversity"] is not None and np.isfinite(values["intra_list_diversity"])  # A's ruler
    assert "with A (" in texts(at)


def test_docstring_examples_hold():
    from studio import trust

    result = doctest.testmod(trust)
    assert result.attempted > 0 and result.failed == 0
