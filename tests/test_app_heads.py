"""The Attention page's heads that say something (issue 26): what each self-attention head of the
news encoder looks at across the split, heads mostly on one common token marked, stop words
hidden from the heatmap on request, and the one bar-colour rule of the click bars and the export.

The model is a copy of the shipped demo model with two heads set by hand, so that the answers are
known whatever the shipped weights are: head 1 looks (almost) only at "the", head 2 attends
uniformly (its share of "the" is then that word's share of the tokens, which is no dominance).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from conftest import recommit_best  # noqa: E402

from studio_apptest import APP, CTX_KEY, SHIPPED, TIMEOUT, app_home  # noqa: E402


def _doctored_model(out: Path) -> Path:
    """The shipped model with head 1 keyed on the embedding of "the" (every query asks for it, and
    strongly) and head 2 with zero queries and keys (uniform attention)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(SHIPPED, out)
    weights = load_file(out / "model.safetensors")
    words = json.loads((out / "vocab.json").read_text())["words"]
    d = json.loads((out / "config.json").read_text())["model"]["head_dim"]
    the = weights["news_encoder.embedding.weight"][words.index("the")]
    prefix = "news_encoder.self_attention."
    ones = torch.ones(d)
    weights[prefix + "k.weight"][:d] = torch.outer(ones, the / the.norm() ** 2)  # key of "the" = ones
    weights[prefix + "k.bias"][:d] = 0.0
    weights[prefix + "q.weight"][:d] = 0.0
    weights[prefix + "q.bias"][:d] = 30.0 * ones  # every query: the key most like "the", by far
    for name in ("q.weight", "q.bias", "k.weight", "k.bias"):
        weights[prefix + name][d: 2 * d] = 0.0  # head 2: all scores 0, uniform over the title
    save_file(weights, out / "model.safetensors")
    recommit_best(out)
    return out


@pytest.fixture(scope="module", autouse=True)
def studio_home(tmp_path_factory):
    if not (SHIPPED / "model.safetensors").is_file():
        pytest.skip("needs the shipped assets/demo_model to build the test model from")
    home = tmp_path_factory.mktemp("nram_home")
    model = _doctored_model(tmp_path_factory.mktemp("model") / "demo_model")
    with app_home(home, NRAM_DEMO_MODEL=str(model)):
        yield home


@pytest.fixture(autouse=True)
def isolated_nram_home(studio_home, monkeypatch):
    """Overrides tests/conftest.py's per-test home: these tests share one app home, as one app would."""
    monkeypatch.setenv("NRAM_HOME", str(studio_home))
    return studio_home


def attention_page(*, history_at_least: int = 5) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    users = at.session_state[CTX_KEY].users
    user = users[(users["history"] >= history_at_least) & (users["clicks"] > 0)]["user"].iloc[0]
    at.selectbox(key="user").set_value(user).run()
    at.switch_page("views/attention.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def heads_table(at: AppTest):
    return next(df.value for df in at.dataframe if "mostly one common token" in df.value.columns)


def heatmap(at: AppTest) -> dict:
    chart = next(c for c in at.get("plotly_chart") if "att_heatmap" in str(c.proto.id))
    return json.loads(chart.proto.spec)["data"][0]


def decoded(array) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {dtype, bdata (base64), shape}."""
    if not isinstance(array, dict):
        return np.asarray(array)
    values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    shape = array.get("shape")
    return values.reshape([int(n) for n in str(shape).split(",")]) if shape else values


def heatmap_words(at: AppTest) -> list[str]:
    return [label.split("·", 1)[1] for label in heatmap(at)["x"]]


# ---- the page -------------------------------------------------------------------------------------------
def test_the_heads_summary_is_shown_and_marks_the_head_that_mostly_attends_to_the():
    at = attention_page()
    table = heads_table(at)
    c = at.session_state[CTX_KEY]
    assert len(table) == c.info.model_config.num_heads
    head1, head2 = table.iloc[0], table.iloc[1]
    assert head1["mostly one common token"].startswith("'the' ")  # the hand-set head, marked
    assert head1["top words (share of its weight)"].startswith("'the' ")
    assert head1["besides stop words"] and "'the'" not in head1["besides stop words"]  # what it reads besides
    assert head2["mostly one common token"] == ""  # uniform: "the" gets only its share of the words
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "head 1 mostly 'the'" in text and "head 2 mostly" not in text
    # the table says what the core computes for this model and split
    from nram_core.attention_stats import head_summaries

    core = head_summaries(c.rec.model, c.rec.split, c.info.vocab)
    assert [s.dominant or "" for s in core] == [v.split(" ")[0].strip("'") if v else "" for v in
                                                table["mostly one common token"]]
    # a chosen head's line says the same under the heatmap
    at.selectbox(key="att_head").set_value("head 1").run()
    assert any(cap.value.startswith("head 1: mostly 'the'") for cap in at.caption)


def test_hiding_stop_words_changes_the_heatmap():
    from nram_core.attention_stats import STOP_WORDS

    at = attention_page()
    titles = at.selectbox(key="att_title").options

    # a title with both stop words and other words, so that hiding changes what is drawn
    for index in range(len(titles)):
        at.selectbox(key="att_title").select_index(index).run()
        words = heatmap_words(at)
        if any(w in STOP_WORDS for w in words) and any(w not in STOP_WORDS for w in words):
            break
    else:
        pytest.fail("no title of this user mixes stop words and other words")
    before, labels = heatmap_words(at), list(heatmap(at)["x"])
    at.toggle(key="att_stopwords").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    after = heatmap_words(at)
    assert after == [w for w in before if w not in STOP_WORDS] and len(after) < len(before)
    assert list(heatmap(at)["x"]) == [label for label, w in zip(labels, before) if w not in STOP_WORDS]  # places kept
    shares = decoded(heatmap(at)["customdata"]).reshape(len(after), len(after), 2)[..., 0]  # share among the kept
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert any("words hidden" in cap.value for cap in at.caption)


def test_click_bars_and_export_bars_share_one_colour_rule_and_are_readable():
    from studio.charts import BAR_AT_OR_BELOW_UNIFORM, attention_bar_colours, attention_colour, click_attention_bar

    # nearly even attention over 50 clicks (normalised entropy about 0.98): no bar is white
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.full(50, 60.0))
    colours = attention_bar_colours(weights)
    white = attention_colour(0.0)
    assert white not in colours and BAR_AT_OR_BELOW_UNIFORM in colours
    assert any(c != BAR_AT_OR_BELOW_UNIFORM for c in colours)
    fig = click_attention_bar([f"click {i}" for i in range(50)], weights, title="t")
    assert list(fig.data[0].marker.color) == colours
    assert fig.layout.xaxis.range[1] < 2 * weights.max()  # the axis ends near the longest bar, not at 1

    # the export draws the same colours, and its longest bar fills the cell
    from studio import cache
    from studio.export import view_report

    at = attention_page(history_at_least=20)
    c = at.session_state[CTX_KEY]
    imp = int(c.impressions[-1])
    html = view_report(c, imp, cache.rank_impression(c.rec, imp))
    recent = np.asarray(c.history)[-c.info.model_config.history_len:]
    exp = c.rec.explain(recent, np.array([int(cache.rank_impression(c.rec, imp).rows[0])]))
    expected = attention_bar_colours(np.asarray(exp.click_weights))
    fills = [(float(w), col) for w, col in
             re.findall(r"class='fill' style='width:([\d.]+)%;background:([^']+)'", html)]
    assert len(fills) == len(recent)
    assert max(w for w, _ in fills) == 100.0
    assert sorted(col for _, col in fills) == sorted(expected)
    assert "class='uniform'" in html


# ---- the core function on a real model ------------------------------------------------------------------
def test_head_word_attention_sums_to_the_number_of_real_words(studio_home):
    """Every real query word gives 1 in total to each head: the [h,V] table adds up to the number of
    words, per head, and padding receives nothing."""
    from nram_core.attention_stats import head_word_attention, summarise_heads
    from nram_core.checkpoint import load_run
    from nram_core.run_info import read_run_info
    from studio.registry import ensure_demo_corpus

    corpus, _ = ensure_demo_corpus()
    model_dir = Path(os.environ["NRAM_DEMO_MODEL"])
    info = read_run_info(model_dir)
    split = info.load_split("dev", corpus / "dev")
    model = load_run(model_dir, device="cpu").model.eval()
    rows = np.arange(1, min(len(split.news), 400))
    received, counts = head_word_attention(model, split, rows, batch_size=64)
    real_words = int((split.news.tokens[rows] != 0).sum())
    assert received.shape == (model.config.num_heads, model.config.vocab_size)
    assert np.allclose(received.sum(axis=1), real_words) and counts.sum() == real_words
    assert np.allclose(received[:, 0], 0.0)
    # batch size does not change the answer
    again, _ = head_word_attention(model, split, rows, batch_size=400)
    assert np.allclose(received, again)
    # uniform head 2: each word's share is its share of the tokens (within float error)
    summary = summarise_heads(received, counts, info.vocab.words)
    the = info.vocab.words.index("the")
    assert summary[1].dominant is None
    assert abs(received[1, the] / real_words - counts[the] / real_words) < 1e-6
    assert summary[0].dominant == "the" and summary[0].dominant_share > 0.5


def test_docstring_examples_of_the_head_summary_hold():
    import doctest

    from nram_core import attention_stats

    result = doctest.testmod(attention_stats)
    assert result.attempted >= 10 and result.failed == 0


# ---- layout: the columns a reader compares fit the main area at 1280×800 --------------------------------
MAIN_AREA_PX = 820  # st.dataframe's width at a 1280×800 window with the sidebar open (Chromium, measured)
KEY_COLUMNS = {  # per table (found by its columns): the columns that must be on screen without scrolling
    "whatif": ["rank", "change", "clicked", "title", "score", "score before", "probability"],
    "ranked": ["rank", "clicked", "title", "score", "probability"],
    "heads": ["head", "mostly one common token", "top words (share of its weight)", "besides stop words"],
    "datasets": ["dataset", "status"],
}


def _key_columns_fit(at: AppTest, name: str) -> None:
    keys = KEY_COLUMNS[name]
    df = next(d for d in at.dataframe if set(keys) <= set(d.value.columns))
    assert list(df.value.columns[:len(keys)]) == keys, (name, list(df.value.columns))  # first, so on screen
    widths = json.loads(df.proto.columns)
    total = sum(widths[k]["width"] for k in keys)  # every key column has a width in pixels
    assert total <= MAIN_AREA_PX - 4, (name, total)  # 4: the grid's borders


def test_key_columns_fit_the_main_area_at_1280_px():
    at = attention_page(history_at_least=5)
    _key_columns_fit(at, "heads")
    at.switch_page("views/recommendations.py").run()
    _key_columns_fit(at, "ranked")
    at.switch_page("views/whatif.py").run()
    _key_columns_fit(at, "whatif")
    at.switch_page("views/data.py").run()
    _key_columns_fit(at, "datasets")
