"""NRAM Studio pages under streamlit.testing (AppTest): every page, the main interactions,
a tiny training run, and the error messages for bad input.

All tests share one temporary NRAM_HOME (the demo corpus is generated into it on the
first run). The model is the shipped ``assets/demo_model`` when it exists; otherwise a
small model is trained into the temporary home and offered as the shipped one.
"""
from __future__ import annotations

import dataclasses
import http.server
import io
import json
import re
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from studio_apptest import (APP, REPO, SHIPPED, TIMEOUT, assert_clean, ctx, goto, new_app,  # noqa: E402
                            fill_train_form)


# ---- fixtures ------------------------------------------------------------------------------------
def _train_fixture_model(corpus_dir: Path, out: Path) -> None:
    """A quick model on the demo corpus, for checkouts that do not ship assets/demo_model yet."""
    from nram_core.config import preset
    from nram_core.data.layout import resolve_layout
    from nram_core.train import Trainer, prepare_run

    model_cfg, train_cfg = preset("demo")
    train_cfg = dataclasses.replace(train_cfg, epochs=1, max_steps=30, max_impressions=2000,
                                    max_dev_impressions=200)
    prepared = prepare_run(resolve_layout(corpus_dir), model_cfg, train_cfg)
    Trainer(**prepared.trainer_args(), run_dir=out,
            data_info={"train": str(corpus_dir / "train"), "preset": "demo"}).fit()


@pytest.fixture(scope="module", autouse=True)
def studio_home(tmp_path_factory):
    """A fresh NRAM_HOME for the whole module, plus a model and an invalid NRAM_DATA_DIRS entry."""
    home = tmp_path_factory.mktemp("nram_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NRAM_HOME", str(home))
        mp.setenv("NRAM_DATA_DIRS", str(home / "no-such-mind-folder"))
        mp.setenv("NRAM_MIND_BASE_URL", "http://127.0.0.1:9")  # nothing listens there: "no network"
        mp.delenv("NRAM_DEMO_MODEL", raising=False)
        if not (SHIPPED / "model.safetensors").is_file():
            from studio.registry import ensure_demo_corpus

            corpus, _ = ensure_demo_corpus()
            model = tmp_path_factory.mktemp("model") / "demo_model"
            _train_fixture_model(corpus, model)
            mp.setenv("NRAM_DEMO_MODEL", str(model))
        yield home
        from studio.cache import training_job  # never leave a training thread running

        training_job().cancel()
        training_job().join(60)


@pytest.fixture(autouse=True)
def isolated_nram_home(studio_home, monkeypatch):
    """Overrides tests/conftest.py's per-test home: these tests share one app home, as one app would."""
    monkeypatch.setenv("NRAM_HOME", str(studio_home))
    return studio_home


def all_text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader"):
        parts.extend(str(e.value) for e in getattr(at, kind))
    return "\n".join(parts)


def pick_user(at: AppTest, user: str) -> AppTest:
    at.selectbox(key="user").set_value(user).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def users_where(at: AppTest, condition) -> list[str]:
    table = ctx(at).users
    return table[condition(table)]["user"].tolist()


FRAMES = {  # which table is which: st.dataframe keys are not visible to AppTest
    "history": {"#", "title", "subcategory"},
    "ranked": {"rank", "clicked", "score", "probability"},
    "catalog": {"rank", "score", "probability"},
    "whatif": {"rank", "change", "score before"},
    "runs": {"run", "auc", "folder"},
    "reports": {"file", "rows", "kept", "skipped"},
}


def frame(at: AppTest, name: str):
    wanted = FRAMES[name]
    for df in at.dataframe:
        value = df.value
        columns = set(value.columns)
        if wanted <= columns and not (name == "catalog" and "clicked" in columns) \
                and not (name in ("ranked", "catalog") and "change" in columns):
            return value
    raise AssertionError(f"no {name} table on the page")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# ---- every page -------------------------------------------------------------------------------------
@pytest.mark.parametrize("page,title", [("overview", "Overview"), ("recommendations", "Recommendations"),
                                        ("attention", "Attention"), ("whatif", "What-if"), ("train", "Train"),
                                        ("data", "Data"), ("map", "News map"), ("compare", "Compare")])
def test_every_page_renders_without_error(page, title):
    at = goto(new_app(), page)
    assert_clean(at)
    assert any(t.value == title for t in at.title)


def test_experiments_page_is_in_the_navigation():
    at = goto(new_app(), "experiments")
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.value == "Experiments" for t in at.title)


def test_first_start_uses_demo_corpus_and_shipped_model(studio_home):
    at = new_app()
    assert (studio_home / "demo" / "seed-0" / "truth.json").is_file()
    assert at.selectbox(key="dataset").value == "demo"
    c = ctx(at)
    assert c.model is not None and c.model.source == "shipped"
    assert at.selectbox(key="model").format_func(at.selectbox(key="model").value).startswith("Demo model")
    # overview: figures, the four charts, the skipped-rows report and the model card
    assert metric(at, "Users") == f"{len(c.split.user_ids):,}"
    assert len(at.get("vega_lite_chart")) >= 4
    assert "Model card" in all_text(at)
    assert "Parameters" in [m.label for m in at.metric]


OVERVIEW_WITHOUT_TORCH = """
import json
import re
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from studio import charts, context, cache, registry  # everything main.py and the Overview import
corpus, _ = registry.ensure_demo_corpus()
model = registry.discover_models()[0]
info = cache.get_run_info(model.key, model.mtime_ns)
split = cache.get_split("dev", str(corpus / "dev"), str(corpus / "train"), model.key, model.mtime_ns)
stats = cache.split_stats(split, ("k",))
fit = cache.vocab_fit(info, split, ("k",), str(corpus / "train"))
assert stats["impressions"] > 0 and fit.level == "ok" and info.num_parameters > 0, (stats, fit)
print(sorted(m for m in ("torch", "nram_core.model", "nram_core.recommend") if m in sys.modules))
"""


def test_sidebar_and_overview_need_no_torch(studio_home, tmp_path):
    """A first start shows the Overview without waiting for torch's import (the model is built after it)."""
    import os
    import subprocess

    script = tmp_path / "overview_without_torch.py"
    script.write_text(OVERVIEW_WITHOUT_TORCH)
    done = subprocess.run([sys.executable, str(script), str(APP.parent)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NRAM_HOME": str(studio_home)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_model_card_size_is_the_model_parameter_count():
    from nram_core.checkpoint import load_run
    from nram_core.run_info import read_run_info

    c = ctx(new_app())
    run = load_run(c.model.path)
    assert read_run_info(c.model.path).num_parameters == sum(p.numel() for p in run.model.parameters())
    assert c.info.num_parameters == sum(p.numel() for p in run.model.parameters())


# ---- recommendations -----------------------------------------------------------------------------------
def test_user_history_and_ranked_impression():
    at = goto(new_app(), "recommendations")
    user = users_where(at, lambda t: (t["history"] >= 5) & (t["clicks"] > 0))[0]
    pick_user(at, user)
    assert_clean(at)
    c = ctx(at)
    history = frame(at, "history")
    assert len(history) == len(c.history)
    newest = c.split.news.titles[int(c.history[-1])]
    assert history.iloc[0]["title"] == newest  # newest first
    ranked = frame(at, "ranked")
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert {"score", "probability", "clicked", "category"} <= set(ranked.columns)
    assert np.all(np.diff(ranked["score"].to_numpy()) <= 1e-9)
    imp = at.selectbox(key="impression_choice").value
    _, labels = c.split.candidates_of(imp)
    assert (ranked["clicked"] == "✓").sum() == int(labels.sum())
    assert {m.label for m in at.metric} >= {"AUC", "MRR", "nDCG@5", "nDCG@10"}


def test_switch_impression_changes_candidates():
    at = goto(new_app(), "recommendations")
    user = users_where(at, lambda t: (t["impressions"] >= 2) & (t["history"] > 0))[0]
    pick_user(at, user)
    box = at.selectbox(key="impression_choice")
    first = frame(at, "ranked")["news_id"].tolist()
    other = [o for o in ctx(at).impressions.tolist() if o != box.value][0]
    box.set_value(other).run()
    assert_clean(at)
    second = frame(at, "ranked")["news_id"].tolist()
    c = ctx(at)
    expected = sorted(c.split.news.ids[r] for r in c.split.candidates_of(other)[0])
    assert sorted(second) == expected and second != first


def test_catalog_mode_excludes_history_and_filters_category():
    at = goto(new_app(), "recommendations")
    user = users_where(at, lambda t: t["history"] >= 5)[0]
    pick_user(at, user)
    at.segmented_control(key="rec_mode").set_value("Catalog").run()
    assert_clean(at)
    table = frame(at, "catalog")
    c = ctx(at)
    assert len(table) == 20
    read = {c.split.news.ids[r] for r in c.history}
    assert not read & set(table["news_id"])
    assert at.get("vega_lite_chart"), "score distribution chart"
    category = c.split.news.categories[0]
    at.selectbox(key="catalog_category").set_value(category).run()
    assert set(frame(at, "catalog")["category"]) == {category}


def test_cold_user_is_explained():
    at = new_app()
    cold = users_where(at, lambda t: t["history"] == 0)
    if not cold:
        pytest.skip("no cold user in this corpus")
    pick_user(at, cold[0])
    goto(at, "recommendations")
    assert_clean(at)
    assert "cold user" in all_text(at)
    scores = frame(at, "ranked")["score"].to_numpy()
    assert np.allclose(scores, scores[0])
    goto(at, "attention")
    assert "cold user" in all_text(at)
    goto(at, "whatif")
    assert_clean(at)
    assert "cold user" in all_text(at)


def test_the_user_picker_searches_every_user_when_there_are_too_many_to_list(monkeypatch):
    """MIND-large has 1M users: the list shows a capped few, and a search over the sorted ids (by the
    start of the id, on the server) finds any other; here the cap is cut to 40 on the demo corpus."""
    from studio import context

    monkeypatch.setattr(context, "USER_OPTIONS_CAP", 40)
    at = new_app()
    ids = ctx(at).split.user_ids
    assert len(ids) > 40 and len(at.selectbox(key="user").options) <= 41  # the cap, plus the chosen user
    wanted = ids[-1]  # sorted last: beyond the listed first 40
    assert wanted not in at.selectbox(key="user").options
    at.text_input(key="user_query").input(wanted[:-1].lower()).run()  # "u99" finds U99…
    options = at.selectbox(key="user").options
    assert wanted in options and all(o.startswith(wanted[:-1]) for o in options if o != ctx(at).user)
    pick_user(at, wanted)
    assert ctx(at).user == wanted and not ctx(at).user_error
    assert f"{len(ctx(at).history)} clicks in history" in all_text(at)
    at.text_input(key="user_query").input("no-such-prefix").run()
    assert any("starts with that" in w.value for w in at.warning) and ctx(at).user == wanted
    for _ in range(3):  # Random user still draws from every user, not only the listed ones
        at.button(key="random_user").click().run()
        drawn = ctx(at).users.set_index("user").loc[ctx(at).user]
        assert drawn["scorable"] and drawn["history"] > 0


def test_unknown_user_id_shows_error():
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["user"] = "U-does-not-exist"  # as if typed into the user box (accepts new options)
    at.run()
    assert any("Unknown user id 'U-does-not-exist'" in e.value for e in at.error)
    goto(at, "recommendations")
    assert not at.exception
    assert any("Unknown user id 'U-does-not-exist'" in e.value for e in at.error)


def test_cached_scoring_is_keyed_by_the_recommenders_identity():
    """Pages pass no cache key: a Recommender is cached by its run folder, weights and split, and the
    cached scoring tells two recommenders apart by that identity alone."""
    from nram_core.recommend import Recommender
    from studio import cache

    at = goto(new_app(), "recommendations")
    c = ctx(at)
    assert c.rec.identity == (c.model.key, c.model.mtime_ns, str(c.dataset.folder(c.split_name)), c.split_name)
    assert c.recommender_for(c.model) is c.rec  # built once per process
    imp = int(at.selectbox(key="impression_choice").value)
    mine = cache.rank_impression(c.rec, imp)
    assert np.array_equal(mine.scores, c.rec.rank_impression(imp).scores)
    other = Recommender(c.rec.model, c.split, news_vectors=c.rec.news_vectors * 2, identity=("another run",))
    theirs = cache.rank_impression(other, imp)
    assert np.array_equal(theirs.scores, other.rank_impression(imp).scores)
    assert not np.allclose(theirs.scores, mine.scores)
    twin = Recommender(c.rec.model, c.split, news_vectors=c.rec.news_vectors * 2, identity=c.rec.identity)
    assert np.array_equal(cache.rank_impression(twin, imp).scores, mine.scores)  # same identity: same answer
    with pytest.raises(Exception, match="without an identity"):  # it would share every answer with its like
        cache.rank_impression(Recommender(c.rec.model, c.split, news_vectors=c.rec.news_vectors), imp)


def test_stale_widget_values_fall_back_to_an_option():
    """A value left in the session that the widget cannot show (another dataset, a removed model, an
    old version of the app) is replaced by a valid one before the widget is drawn, on every page."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    stale = {"dataset": "gone", "model": "/no/such/run", "rec_mode": "Bogus", "catalog_top": 7,
             "catalog_category": "no-such-category", "att_head": "head 99", "att_title": "click:-1",
             "whatif_mode": "Bogus", "whatif_top": "many", "download_size": "huge", "train_preset": "nope"}
    for key, value in stale.items():
        at.session_state[key] = value
    at.run()
    assert_clean(at)
    assert at.selectbox(key="dataset").value == ctx(at).datasets[0].key
    assert at.selectbox(key="model").value == ctx(at).models[0].key
    user = users_where(at, lambda t: (t["history"] >= 5) & t["scorable"])[0]
    pick_user(at, user)
    goto(at, "recommendations")
    assert_clean(at)
    assert at.segmented_control(key="rec_mode").value == "Impression"
    at.segmented_control(key="rec_mode").set_value("Catalog").run()
    assert at.slider(key="catalog_top").value == 20 and at.selectbox(key="catalog_category").value == "All categories"
    goto(at, "attention")
    assert_clean(at)
    assert at.selectbox(key="att_head").value == "mean" and at.selectbox(key="att_title").value == "candidate"
    goto(at, "whatif")
    assert_clean(at)
    assert at.segmented_control(key="whatif_mode").value == "Impression candidates"
    at.segmented_control(key="whatif_mode").set_value("Whole catalog").run()
    assert at.slider(key="whatif_top").value == 20
    goto(at, "data")
    assert at.selectbox(key="download_size").value == "demo"
    goto(at, "train")
    assert at.selectbox(key="train_preset").value == "demo"


# ---- attention --------------------------------------------------------------------------------------------
def test_attention_charts_and_contributions_sum_to_score():
    at = new_app()
    user = users_where(at, lambda t: (t["history"] >= 8) & (t["clicks"] > 0))[0]
    pick_user(at, user)
    goto(at, "attention")
    assert_clean(at)
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # waterfall, click attention, heatmap
    score = float(metric(at, "Score (model)"))
    total = float(metric(at, "Σ per-click contributions"))
    assert abs(score - total) < 1e-4
    # the same numbers straight from the core
    c = ctx(at)
    candidate = at.selectbox(key="att_candidate").value
    exp = c.rec.explain(c.history, np.array([candidate]))
    assert abs(float(exp.scores[0]) - score) < 1e-5
    assert abs(float(c.rec.score(c.history, np.array([candidate]))[0]) - score) < 1e-4
    html = "".join(m.value for m in at.markdown)
    assert "uniform (1/n) or less" in html and "background:" in html  # legend and shaded words
    # Shading is relative to uniform attention: a word at its fair share 1/n stays white, and how
    # peaked each view is is also said in words (normalised entropy).
    from studio.charts import attention_colour, shaded_title_html

    even = shaded_title_html(["the", "a", "dividend"], np.full(3, 1 / 3))
    assert even.count(f"background:{attention_colour(0.0)}") == 3
    peaked = shaded_title_html(["the", "dividend"], np.array([0.1, 0.9]))
    assert f"background:{attention_colour(0.0)}" in peaked and f"background:{attention_colour(0.8)}" in peaked
    captions = [c.value for c in at.caption]
    assert any("word attention" in t and "normalised entropy" in t for t in captions)
    assert any("Attention over the clicks" in t and "normalised entropy" in t for t in captions)
    # another candidate, a clicked title's heatmap, one head: still consistent
    options = at.selectbox(key="att_candidate").options
    at.selectbox(key="att_candidate").select_index(len(options) - 1).run()
    at.selectbox(key="att_title").select_index(1).run()
    at.selectbox(key="att_head").select_index(1).run()
    assert_clean(at)
    assert abs(float(metric(at, "Score (model)")) - float(metric(at, "Σ per-click contributions"))) < 1e-4


def test_topical_word_overlay_on_demo_corpus():
    at = new_app()
    user = users_where(at, lambda t: t["history"] >= 5)[0]
    pick_user(at, user)
    goto(at, "attention")
    toggle = at.toggle(key="att_topical")
    assert not toggle.disabled
    toggle.set_value(True).run()
    assert_clean(at)
    html = "".join(m.value for m in at.markdown)
    assert "truth.json" in html and "text-decoration:underline" in html


# ---- what-if -----------------------------------------------------------------------------------------------
def test_whatif_removing_clicks_changes_the_ranking():
    at = new_app()
    user = users_where(at, lambda t: (t["history"] >= 6) & (t["clicks"] > 0))[0]
    pick_user(at, user)
    goto(at, "whatif")
    assert_clean(at)
    before = frame(at, "whatif")
    assert set(before["change"]) == {"="}
    clicks = at.pills(key="whatif_clicks")
    history = list(clicks.value)
    clicks.set_value(history[-2:]).run()  # keep the two newest clicks only
    assert_clean(at)
    after = frame(at, "whatif")
    assert f"{len(history) - 2} click(s) removed" in all_text(at)
    assert not np.allclose(after["score"].to_numpy(), after["score before"].to_numpy())
    assert (after["change"] != "=").any(), "the ranking should move"
    # the edit survives a page switch and back
    goto(at, "overview")
    goto(at, "whatif")
    assert len(at.pills(key="whatif_clicks").value) == 2
    # add a news found by title search, then go back to the real history
    c = ctx(at)
    word = c.split.news.titles[int(c.split.behaviors.candidates[0])].split()[0]
    at.text_input(key="whatif_query").input(word).run()
    at.button(key="whatif_add").click().run()
    assert_clean(at)
    assert "1 added" in all_text(at)
    at.button(key="whatif_reset").click().run()
    assert "0 click(s) removed, 0 added" in all_text(at)


def test_whatif_catalog_mode_marks_new_entries():
    at = new_app()
    user = users_where(at, lambda t: t["history"] >= 6)[0]
    pick_user(at, user)
    goto(at, "whatif")
    at.segmented_control(key="whatif_mode").set_value("Whole catalog").run()
    clicks = at.pills(key="whatif_clicks")
    clicks.set_value(list(clicks.value)[:1]).run()
    assert_clean(at)
    table = frame(at, "whatif")
    assert len(table) == 20
    assert all(c == "=" or c == "new" or c[0] in "↑↓" for c in table["change"])
    assert (table["change"] != "=").any()


# ---- bad input ------------------------------------------------------------------------------------------------
def test_bad_folders_give_clear_errors(studio_home, tmp_path):
    at = goto(new_app(), "data")
    # not a MIND folder
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    at.text_input(key="register_path").input(str(tmp_path / "notes"))
    next(b for b in at.button if b.label == "Register").click().run()
    assert not at.exception
    assert any("Not registered" in e.value and "notes" in e.value for e in at.error)
    # a missing folder
    at.text_input(key="register_path").input(str(tmp_path / "missing"))
    next(b for b in at.button if b.label == "Register").click().run()
    assert any("no such file or folder" in e.value for e in at.error)
    # a relative path is refused too (no browsing relative to the server's folder)
    at.text_input(key="register_path").input("some/relative/dir")
    next(b for b in at.button if b.label == "Register").click().run()
    assert any("absolute path" in e.value for e in at.error)
    # the invalid NRAM_DATA_DIRS entry is listed, and choosing it explains itself on every page
    bad = next(d.key for d in ctx(at).datasets if "no-such-mind-folder" in d.key)
    assert any(o.startswith("⚠") and "no-such-mind-folder" in o for o in at.selectbox(key="dataset").options)
    at.selectbox(key="dataset").set_value(bad).run()
    goto(at, "overview")
    assert not at.exception
    assert any("cannot be used" in e.value and "no such file or folder" in e.value for e in at.error)
    goto(at, "recommendations")
    assert at.error and not at.exception


def write_mind_split(folder: Path, titles: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    news = "".join(f"N{i}\tnews\tworld\t{t}\tabstract\thttps://x/{i}\t[]\t[]\n" for i, t in enumerate(titles, 1))
    rows = []
    for i in range(1, len(titles) - 1):
        rows.append(f"{i}\tU{i % 3}\t11/15/2019 9:0{i % 10}:00 AM\tN{i}\tN{i + 1}-1 N{i + 2}-0\n")
    rows.append("bad row without tabs\n")
    (folder / "news.tsv").write_text(news, encoding="utf-8")
    (folder / "behaviors.tsv").write_text("".join(rows), encoding="utf-8")


def test_registered_folder_and_vocabulary_mismatch(tmp_path):
    gibberish = [" ".join(f"zq{i}x{j}" for j in range(5)) for i in range(12)]
    root = tmp_path / "alien"
    write_mind_split(root / "train", gibberish)
    write_mind_split(root / "dev", gibberish)
    at = goto(new_app(), "data")
    at.text_input(key="register_path").input(str(root))
    at.text_input(key="register_name").input("Alien words")
    next(b for b in at.button if b.label == "Register").click().run()
    assert_clean(at)
    assert any("Registered Alien words" in s.value for s in at.success)
    at.button(key="data_use").click().run()
    assert "Alien words" in at.selectbox(key="dataset").format_func(at.selectbox(key="dataset").value)
    # the overview still works (it needs no model) and reports the skipped row
    goto(at, "overview")
    assert any("rows could not be used" in w.value for w in at.warning)
    reports = frame(at, "reports")
    assert reports["skipped"].sum() >= 1
    # the shipped model cannot read these titles: a clear error, no traceback
    assert any("<unk>" in e.value for e in at.error)
    goto(at, "recommendations")
    assert not at.exception and any("<unk>" in e.value for e in at.error)


def test_real_mind_sample_from_data_dirs(monkeypatch, mind_sample):
    """Real MIND rows (most ids unresolvable): dropped ids reported, <unk> warning, pages still work."""
    monkeypatch.setenv("NRAM_DATA_DIRS", str(mind_sample.parent))  # a root holding a MIND folder
    at = new_app()
    key = next(d.key for d in ctx(at).datasets if d.root == mind_sample.resolve())
    at.selectbox(key="dataset").set_value(key).run()
    assert not at.exception and not at.error  # the user picker moved on to a user of this dataset
    assert any("dropped" in i.value for i in at.info)
    reports = frame(at, "reports")
    assert "unresolved history ids" in " ".join(reports["dropped"])
    # "dropped" before the long per-reason text: on a narrow window only the last column is cut off
    assert list(reports.columns)[-2:] == ["dropped", "why"]
    assert any("<unk>" in w.value for w in at.warning)  # synthetic vocabulary vs real titles
    # The first view and Random user land on users whose impression can be scored, and who have
    # clicks where the split has such users (on this sample most users are cold, and many
    # impressions have one candidate; its dev split has no user with both).
    for split in ("dev", "train"):
        at.radio(key="split").set_value(split).run()
        c = ctx(at)
        row = c.users.set_index("user").loc[c.user]
        assert row["scorable"] and c.users["scorable"].mean() < 0.5, split
        if split == "train":
            assert row["history"] > 0
        for _ in range(3):
            at.button(key="random_user").click().run()
            drawn = ctx(at).users.set_index("user").loc[ctx(at).user]
            assert drawn["scorable"] and (split == "dev" or drawn["history"] > 0), split
    for page in ("recommendations", "attention", "whatif"):
        goto(at, page)
        assert not at.error, [e.value for e in at.error]


def test_data_dirs_and_command_line_folders(monkeypatch, tmp_path):
    from studio import registry

    assert registry.argv_data_dirs(["app/main.py", "--data", "/a", "--other", "x", "--data", "/b"]) == ["/a", "/b"]
    write_mind_split(tmp_path / "one" / "train", ["a b c", "d e f", "g h i", "j k l"])
    write_mind_split(tmp_path / "one" / "dev", ["a b c", "d e f", "g h i", "j k l"])
    monkeypatch.setenv("NRAM_DATA_DIRS", str(tmp_path))  # a root with MIND folders inside
    monkeypatch.setattr(sys, "argv", ["app/main.py", "--data", str(tmp_path / "nothing-here")])
    entries = registry.discover_datasets()
    one = next(e for e in entries if e.root == (tmp_path / "one").resolve())
    assert one.ok and one.source == "env" and one.splits() == ["dev", "train"]
    bad = next(e for e in entries if e.source == "argv")
    assert not bad.ok and "no such file or folder" in bad.error


def test_download_without_network_says_so():
    at = goto(new_app(), "data")
    at.button(key="download_go").click().run()
    assert not at.exception
    assert any("Download failed" in e.value and "network" in e.value for e in at.error)


def _mind_zip(titles: list[str]) -> bytes:
    tmp = io.BytesIO()
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("news.tsv", "".join(f"N{i}\tnews\tworld\t{t}\ta\thttps://x/{i}\t[]\t[]\n"
                                        for i, t in enumerate(titles, 1)))
        zf.writestr("behaviors.tsv", "".join(f"{i}\tU{i}\t11/15/2019 9:00:00 AM\tN{i}\tN{i + 1}-1 N{i + 2}-0\n"
                                             for i in range(1, len(titles) - 1)))
    return tmp.getvalue()


def test_download_from_a_mirror_registers_the_folder(monkeypatch, studio_home):
    payload = _mind_zip([f"title number {i} about sports" for i in range(8)])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("NRAM_MIND_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        at = goto(new_app(), "data")
        at.button(key="download_go").click().run()
        assert_clean(at)
        assert any("MINDdemo is ready" in s.value for s in at.success)
        assert (studio_home / "mind" / "demo" / "MINDdemo_train" / "news.tsv").is_file()
        assert any("MINDdemo" in label for label in at.selectbox(key="dataset").options)
    finally:
        server.shutdown()


# ---- training ------------------------------------------------------------------------------------------------
def _wait_for(at: AppTest, done, timeout: float = 90.0) -> None:
    from studio.cache import training_job

    deadline = time.time() + timeout
    while time.time() < deadline:
        training_job().join(0.5)
        at.run()
        if done(at):
            return
    raise AssertionError("timed out; page says: " + all_text(at)[-2000:])


@pytest.mark.slow
def test_training_run_finishes_and_appears_in_model_picker(studio_home):
    at = goto(new_app(), "train")
    models_before = len(at.selectbox(key="model").options)
    fill_train_form(at, name="tiny test", epochs=1, maxsteps=3, maximp=40, maxdev=40, batch=16, heads=2, headdim=8,
                     worddim=16)
    assert not at.error, [e.value for e in at.error]
    _wait_for(at, lambda a: any("Finished" in s.value for s in a.success))
    assert_clean(at)
    options = at.selectbox(key="model").options
    assert len(options) == models_before + 1
    run_dir = next(p for p in (studio_home / "runs").iterdir() if p.name.startswith("tiny-test-"))
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "state.json").is_file()
    assert at.get("plotly_chart"), "loss curve"
    table = frame(at, "runs")
    assert table.loc[table["run"] == run_dir.name, "status"].tolist() == ["finished"]
    # use it: the explorer pages run on the new model
    at.button(key="train_use").click().run()
    assert ctx(at).model.path == run_dir.resolve()
    goto(at, "recommendations")
    assert_clean(at)


@pytest.mark.slow
def test_a_categories_model_trained_from_the_train_page_works(studio_home):
    from nram_core.checkpoint import load_run

    at = goto(new_app(), "train")
    at.checkbox(key="tf_cats_demo").check()
    at.selectbox(key="tf_vectors_demo").set_value("none")
    fill_train_form(at, name="with categories", epochs=1, maxsteps=3, maximp=40, maxdev=40, batch=16)
    _wait_for(at, lambda a: any("Finished" in s.value for s in a.success))
    assert_clean(at)
    run_dir = next(p for p in (studio_home / "runs").iterdir() if p.name.startswith("with-categories-"))
    run = load_run(run_dir)
    assert run.model_config.use_categories and run.categories is not None
    assert run.model_config.num_categories == len(run.categories.categories) >= 2
    assert run.train_config.word_vectors == "none" and run.data["word_vectors"] == {"choice": "none"}
    at.button(key="train_use").click().run()
    assert ctx(at).model.path == run_dir.resolve()
    for page in ("recommendations", "attention", "whatif"):  # every explorer page runs on the category model
        goto(at, page)
        assert_clean(at)


@pytest.mark.slow
def test_training_cancel_and_one_run_at_a_time(studio_home):
    from studio.cache import training_job

    at = goto(new_app(), "train")
    fill_train_form(at, name="to cancel", epochs=5, maxsteps=0, maximp=3000, maxdev=40, batch=8)
    job = training_job()
    assert job.busy
    # one run at a time: the form is disabled, and a direct start is refused with a message
    assert next(b for b in at.button if b.label == "Start training").disabled
    c = ctx(at)
    from nram_core.run_info import create_run_dir
    from studio.training import start_training

    second = create_run_dir(studio_home / "runs", "second")
    problem = start_training(job, layout=c.dataset.layout, model_config=c.info.model_config,
                             train_config=c.info.train_config, run_dir=second, data_info={}, label="second")
    assert problem and "already in progress" in problem
    assert not second.exists(), "a refused start leaves no folder behind"
    deadline = time.time() + 60
    while job.snapshot()["global_step"] < 2 and time.time() < deadline:
        time.sleep(0.2)
    at.run()
    at.button(key="train_cancel").click().run()
    _wait_for(at, lambda a: any("Cancelled" in w.value for w in a.warning))
    assert not job.busy
    assert not at.exception
    assert not any(p.name.startswith("to-cancel-") for p in (studio_home / "runs").iterdir()), \
        "a run cancelled before its first epoch leaves nothing behind"


def test_train_form_starts_small_and_says_so():
    """The form's starting values finish in about a minute on two cores, and the page says so."""
    at = goto(new_app(), "train")
    assert at.number_input(key="tf_epochs_demo").value == 2
    assert at.number_input(key="tf_maximp_demo").value == 4000
    assert at.number_input(key="tf_maxdev_demo").value == 1000
    assert any("about a minute" in c.value and "set the caps to 0" in c.value for c in at.caption)


def test_train_form_refuses_invalid_values():
    at = goto(new_app(), "train")
    box = at.number_input(key="tf_epochs_demo")
    assert box.min == 1
    lr = at.number_input(key="tf_lr_demo")
    assert lr.min > 0
    # switching the preset refreshes every field
    at.selectbox(key="train_preset").set_value("paper").run()
    assert at.number_input(key="tf_heads_paper").value == 15


# ---- public mode ---------------------------------------------------------------------------------------------
PAGES = ("overview", "recommendations", "attention", "whatif", "map", "compare", "train", "experiments", "data")
WORK_BUTTONS = ("Start training", "Run suite", "Register", "Download and register", "Remove from the list")


def _rendered_text(at: AppTest) -> str:
    parts = [all_text(at)]
    parts += [df.value.astype(str).to_csv() for df in at.dataframe]
    parts += [str(e.value) for kind in ("metric", "code") for e in getattr(at, kind)]
    return "\n".join(parts)


def _absolute_paths(text: str, roots: list[Path]) -> list[str]:
    found = [str(r) for r in roots if str(r) in text]
    found += re.findall(r"(?<![\w.])/(?:tmp|work|root|home|usr|etc|var|srv|data)/[\w./-]+", text)
    return found


def test_public_mode_offers_no_work_and_shows_no_server_path(monkeypatch, studio_home):
    monkeypatch.setenv("NRAM_PUBLIC", "1")
    at = new_app()
    for page in PAGES:
        goto(at, page)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        labels = {str(b.label) for b in at.button}
        assert not labels & set(WORK_BUTTONS), (page, labels & set(WORK_BUTTONS))
        leaked = _absolute_paths(_rendered_text(at), [studio_home, REPO])
        assert not leaked, (page, leaked[:3])
    goto(at, "train")
    assert any("off on this public demo server" in i.value for i in at.info)


def test_private_mode_keeps_every_control(monkeypatch):
    monkeypatch.delenv("NRAM_PUBLIC", raising=False)
    at = new_app()
    for page, button in (("train", "Start training"), ("experiments", "Run suite"), ("data", "Register")):
        goto(at, page)
        assert button in {str(b.label) for b in at.button}, page


def test_one_job_at_a_time_per_server(studio_home):
    """A suite cannot start while a training run works, and the refusal says why."""
    from studio.cache import suite_job, training_job
    from studio.suites import start_suite

    at = goto(new_app(), "train")
    fill_train_form(at, name="holds the server", epochs=5, maxsteps=0, maximp=3000, maxdev=40, batch=8)
    job = training_job()
    try:
        assert job.busy
        message = start_suite(suite_job(), label="second", suite="paper", layout=ctx(at).dataset.layout,
                              out=studio_home / "experiments" / "second")
        assert message and "one job runs at a time" in message
        assert not suite_job().busy
    finally:
        job.cancel()
        job.join(60)


def test_an_unfit_vocabulary_is_said_once_with_a_button_to_train(monkeypatch, tmp_path):
    words = json.loads((SHIPPED / "vocab.json").read_text())["words"][2:40]
    titles = [f"{words[i % len(words)]} {words[(i + 7) % len(words)]} zq{i}x zq{i}y" for i in range(12)]
    root = tmp_path / "half known"
    write_mind_split(root / "train", titles)
    write_mind_split(root / "dev", titles)
    monkeypatch.setenv("NRAM_DATA_DIRS", str(root))
    at = new_app()
    key = next(d.key for d in ctx(at).datasets if d.root == root.resolve())
    at.selectbox(key="dataset").set_value(key).run()
    assert [w.value for w in at.warning if "<unk>" in w.value], "the overview says it first"
    assert sum("<unk>" in w.value for w in at.warning) == 1
    for page in ("recommendations", "attention", "whatif", "overview"):
        goto(at, page)
        assert not any("<unk>" in w.value for w in at.warning), page
    # its fix: a button to the Train page, the run name prefilled with the dataset
    at = new_app()
    at.selectbox(key="dataset").set_value(key).run()
    at.button(key="fit_train").click().run()
    assert any(t.value == "Train" for t in at.title)
    assert "half known" in at.text_input(key="tf_name_demo").value


def test_export_of_a_users_view_is_one_self_contained_html_file():
    from studio import cache
    from studio.export import view_report

    at = new_app()
    user = users_where(at, lambda t: (t["history"] >= 5) & t["scorable"])[0]
    pick_user(at, user)
    goto(at, "recommendations")
    assert_clean(at)
    assert at.get("download_button"), "the export button"
    c = ctx(at)
    imp = int(at.selectbox(key="impression_choice").value)
    started = time.perf_counter()
    html = view_report(c, imp, cache.rank_impression(c.rec, imp))
    assert time.perf_counter() - started < 2.0
    assert html.startswith("<!DOCTYPE html>") and user in html and "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html and "src=" not in html  # nothing to fetch
    assert "✓" in html and "background:" in html and "sum of the contributions" in html


def test_news_map_marks_the_users_clicks_and_recommendations():
    at = new_app()
    user = users_where(at, lambda t: t["history"] >= 5)[0]
    pick_user(at, user)
    goto(at, "map")
    assert_clean(at)
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [trace.get("name") for trace in figure["data"]]
    assert "clicked by the user" in names and "top 10 recommended" in names
    c = ctx(at)
    categories = set(c.news()["category"].iloc[1:])
    assert categories <= set(names)
    clicked = next(t for t in figure["data"] if t.get("name") == "clicked by the user")
    assert len(clicked["text"]) == len(set(c.history.tolist()))  # every click placed, sampled or not


@pytest.mark.slow
def test_compare_two_models_on_one_user(studio_home):
    """A second model (trained here from the Train page) ranks the same impression beside the first."""
    at = goto(new_app(), "compare")
    if len(ctx(at).models) < 2:
        fill_train_form(at := goto(at, "train"), name="second model", epochs=1, maxsteps=3, maximp=40, maxdev=40,
                         batch=16)
        _wait_for(at, lambda a: any("Finished" in s.value for s in a.success))
        at = new_app()
    user = users_where(at, lambda t: (t["history"] >= 5) & t["scorable"])[0]
    pick_user(at, user)
    goto(at, "compare")
    assert_clean(at)
    table = next(df.value for df in at.dataframe if "rank B" in df.value.columns)
    assert sorted(table["rank A"]) == sorted(table["rank B"]) == list(range(1, len(table) + 1))
    assert set(table["B vs A"]) <= {"="} | {f"{s}{n}" for s in "↑↓" for n in range(1, len(table))}
    assert any(m.label.startswith("AUC: A → B") for m in at.metric)


def test_an_unlabelled_test_split_shows_no_negative_clicks(monkeypatch, tmp_path):
    """MIND's test split has no labels (stored as -1): the Overview counts no click, never a negative one."""
    words = json.loads((SHIPPED / "vocab.json").read_text())["words"][2:40]
    titles = [f"{words[i % len(words)]} {words[(i + 5) % len(words)]}" for i in range(12)]
    root = tmp_path / "MINDdemo_test"
    write_mind_split(root, titles)
    rows = (root / "behaviors.tsv").read_text().splitlines()[:-1]  # drop the deliberately bad last row
    (root / "behaviors.tsv").write_text("".join(
        "\t".join(r.split("\t")[:4] + [" ".join(i.rpartition("-")[0] for i in r.split("\t")[4].split())]) + "\n"
        for r in rows))
    monkeypatch.setenv("NRAM_DATA_DIRS", str(root))
    at = new_app()
    key = next(d.key for d in ctx(at).datasets if d.root == root.resolve())
    at.selectbox(key="dataset").set_value(key).run()
    assert not at.exception
    assert metric(at, "Clicks") == "0" and metric(at, "Click-through rate") == "0.0%"


def test_runs_table_says_what_each_runs_state_says_and_long_names_are_shown_in_full(studio_home):
    """A run is "finished" only when its state.json says so, not when model.safetensors exists:
    a run cancelled after an epoch and an interrupted one keep their weights but say what they are.
    The columns a reader scans come first, and a long run name, cut by the picker, is captioned in full."""
    import shutil

    from studio.registry import demo_model_dir

    runs = studio_home / "runs"
    made = {}
    for status, name in (("cancelled", "cancelled-after-one-epoch-of-four-20261201"),
                         ("incomplete", "interrupted-run-20261201")):
        folder = runs / name
        shutil.copytree(demo_model_dir(), folder)
        state = json.loads((folder / "state.json").read_text())
        state["final"] = None
        state["cancelled"] = status == "cancelled"
        (folder / "state.json").write_text(json.dumps(state))
        made[status] = folder
    try:
        at = goto(new_app(), "train")
        table = frame(at, "runs")
        assert list(table.columns[:4]) == ["run", "status", "epochs", "auc"]
        status = dict(zip(table["run"], table["status"]))
        assert status[made["cancelled"].name] == "cancelled"
        assert status[made["incomplete"].name] == "incomplete"
        assert status["demo model (shipped)"] == "finished"
        key = str(made["cancelled"].resolve())
        at.selectbox(key="model").set_value(key).run()
        label = ctx(at).model.label
        assert len(label) > 26 and label.startswith(made["cancelled"].name)
        assert any(c.value == label for c in at.sidebar.caption), "the full name under the picker"
    finally:
        for folder in made.values():
            shutil.rmtree(folder)

