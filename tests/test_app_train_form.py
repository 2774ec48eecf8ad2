"""The Train form asks the paper's questions (self-attention, residual, categories, heads × head dim,
K), each with its command-line twin; a bad combination is the config's one-line message; a run
trained without self-attention is compared with the shipped model on the Compare page, which says
which settings differ; and every AUC on the Train, Compare and Experiments pages says on how many
impressions it was measured (AppTest, offline, CPU)."""
from __future__ import annotations

import doctest
import json
import time

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from studio_apptest import APP, SHIPPED, TIMEOUT, app_home, fill_train_form  # noqa: E402
# The paper's questions on the form: widget key (demo preset) -> the train command's flag that sets the same field.
TWINS = {"tf_selfattn_demo": "--no-self-attention", "tf_residual_demo": "--no-residual",
         "tf_cats_demo": "--use-categories", "tf_heads_demo": "--num-heads", "tf_headdim_demo": "--head-dim",
         "tf_k_demo": "--negatives"}
TINY = {"epochs": 1, "maxsteps": 3, "maximp": 40, "maxdev": 40, "batch": 16}  # a run of a few seconds


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory):
    """One NRAM_HOME for the module, as one app would have (the demo corpus is generated into it once)."""
    if not (SHIPPED / "model.safetensors").is_file():
        pytest.skip("the shipped demo model (assets/demo_model) is absent")
    home = tmp_path_factory.mktemp("nram_home")
    with app_home(home):
        yield home


@pytest.fixture(autouse=True)
def isolated_nram_home(studio_home, monkeypatch):
    """Overrides tests/conftest.py's per-test home: these tests share the module's home."""
    monkeypatch.setenv("NRAM_HOME", str(studio_home))
    return studio_home


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, *kinds: str) -> list[str]:
    return [str(e.value) for kind in kinds for e in getattr(at, kind)]


def table_with(at: AppTest, *columns: str):
    """The first dataframe on the page that has ``columns`` (AppTest does not see dataframe keys)."""
    return next(df.value for df in at.dataframe if set(columns) <= set(df.value.columns))


def wait_until_finished(at: AppTest, timeout: float = 180.0) -> None:
    from studio.cache import training_job

    deadline = time.time() + timeout
    while time.time() < deadline:
        training_job().join(0.5)
        at.run()
        if any("Finished" in s for s in texts(at, "success")):
            return
    raise AssertionError("timed out; the page says: " + " | ".join(texts(at, "error", "warning", "caption"))[-2000:])


# ---- the form --------------------------------------------------------------------------------------
def test_the_papers_questions_are_switches_each_naming_its_command_line_twin():
    from nram_core.cli import build_parser

    at = page("train")
    switch = at.checkbox(key="tf_selfattn_demo")
    assert switch.label == "Self-attention" and switch.value is True  # the demo preset's model has it
    for key, flag in TWINS.items():
        widget = at.checkbox(key=key) if key in ("tf_selfattn_demo", "tf_residual_demo", "tf_cats_demo") \
            else at.number_input(key=key)
        assert flag in widget.help, (key, widget.help)
    # the flags the form names are the train command's own, setting the fields the form sets
    args = build_parser().parse_args(["train", "--no-self-attention", "--no-residual", "--use-categories",
                                      "--num-heads", "2", "--head-dim", "8", "--negatives", "3"])
    assert (args.self_attention, args.residual, args.use_categories, args.num_heads, args.head_dim,
            args.negatives) == (False, False, True, 2, 8, 3)


@pytest.mark.parametrize("values,message", [
    ({"heads": 2}, "residual needs num_heads * head_dim == word_dim, got 2 * 16 != 64"),
    ({"heads": 64, "headdim": 256}, "num_heads * head_dim must be <= 4096, got 64 * 256"),
])
def test_an_invalid_combination_is_the_configs_one_line_message(studio_home, values, message):
    runs = studio_home / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    at = page("train")
    fill_train_form(at, name="invalid", **values)
    errors = texts(at, "error")
    assert len(errors) == 1 and errors[0].startswith("Invalid setting: ") and message in errors[0], errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert "--num-heads" in errors[0], "it names the command-line flags of the fields at fault"
    after = set(runs.iterdir()) if runs.is_dir() else set()
    assert after == before, "a refused setting starts no run"


def test_the_runs_table_says_on_how_many_impressions_each_auc_was_measured_in_words():
    at = page("train")
    table = table_with(at, "run", "auc", "dev impressions", "trained on")
    shipped = table[table["run"] == "demo model (shipped)"].iloc[0]
    state = json.loads((SHIPPED / "state.json").read_text())
    best = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    assert shipped["dev impressions"] == best["metrics"]["impressions"]
    assert shipped["auc"] == pytest.approx(best["metrics"]["auc"])
    config = json.loads((SHIPPED / "config.json").read_text())
    seed = config["data"]["synthetic"]["seed"]
    assert shipped["trained on"] == f"demo corpus (seed {seed}), train split, all impressions"
    assert shipped["variant"] == "self-attention + residual"
    # every key column has a set width and numbers a set format: auto-sized columns were cut ("3e-")
    shown = next(df for df in at.dataframe if "trained on" in df.value.columns)
    columns = json.loads(shown.proto.columns)
    for name in ("run", "auc", "dev impressions", "trained on", "lr"):
        assert columns[name].get("width"), name
    assert columns["lr"]["type_config"]["format"] == "%g"
    assert any("measured on the number of dev impressions" in c for c in texts(at, "caption"))


# ---- a no-self-attention run from the form, compared with the shipped model ---------------------------
@pytest.mark.slow
def test_self_attention_off_from_the_form_trains_that_ablation_and_compare_says_what_differs(studio_home):
    at = page("train")
    at.checkbox(key="tf_selfattn_demo").uncheck()
    at.selectbox(key="tf_vectors_demo").set_value("none")  # skips word2vec: a quicker tiny run
    fill_train_form(at, name="no self attention", **TINY)
    assert not at.error, texts(at, "error")
    wait_until_finished(at)
    run_dir = next(p for p in (studio_home / "runs").iterdir() if p.name.startswith("no-self-attention-"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["self_attention"] is False
    assert config["model"]["residual"] is True and config["model"]["num_heads"] == 4  # the rest: the form's values
    assert config["train"]["max_dev_impressions"] == TINY["maxdev"]

    # the finished run's AUC, its epoch table and its row in the runs table each say on how many impressions
    state = json.loads((run_dir / "state.json").read_text())
    scored = state["final"]["impressions"]
    assert 0 < scored <= TINY["maxdev"]
    assert any(f"on {scored} dev impressions" in s for s in texts(at, "success")), texts(at, "success")
    assert table_with(at, "train loss", "dev impressions")["dev impressions"].tolist() == [scored]
    runs = table_with(at, "run", "auc", "dev impressions")
    row = runs[runs["run"] == run_dir.name].iloc[0]
    assert row["dev impressions"] == scored and row["variant"] == "no self-attention"
    assert row["trained on"].endswith(f"train split, first {TINY['maximp']} impressions")
    assert any("--no-self-attention" in c.value and "--max-dev-impressions 40" in c.value for c in at.code)

    # Compare: the sidebar's model (the shipped one) against the new run
    at = page("compare")
    at.selectbox(key="compare_model").set_value(str(run_dir.resolve())).run()
    assert not at.exception and not at.error, texts(at, "error")
    assert any("`self_attention`" in m for m in texts(at, "markdown")), "the settings that differ, by name"
    cards, differences = (t.value for t in at.table[:2])
    assert cards.index.tolist() == ["A", "B"]
    assert cards["variant"].tolist() == ["self-attention + residual", "no self-attention"]
    assert cards.loc["A", "evaluated"].endswith("on 3,000 dev impressions")
    assert cards.loc["B", "evaluated"].endswith(f"on {scored} dev impressions")
    assert differences.loc["self_attention"].tolist() == ["--self-attention / --no-self-attention", "on", "off"]
    assert any(f"on {scored} dev impressions" in w and "3,000" in w for w in texts(at, "warning")), \
        "AUCs measured on other numbers of impressions are said to be so"
    if any(m.label.startswith("AUC: A → B") and m.value != "–" for m in at.metric):
        assert any("measured on 1 impression" in c for c in texts(at, "caption"))


# ---- Experiments ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_experiments_page_says_on_how_many_impressions_each_auc_was_measured():
    from nram_core.experiments import experiments_dir, read_records, run_suite
    from studio.registry import ensure_demo_corpus

    corpus, _ = ensure_demo_corpus()
    folder = run_suite(suite="ablation", data=corpus, out=experiments_dir() / "ablation-tiny", epochs=1, seeds=1,
                       train_overrides={"max_impressions": 40, "max_dev_impressions": 60, "batch_size": 32,
                                        "max_steps": 3, "word_vectors": "none"})
    scored = {r["metrics"]["impressions"] for r in read_records(folder)}
    assert len(scored) == 1, "every model of a suite is scored on the same dev impressions"
    (count,) = scored
    at = page("experiments")
    assert next(s for s in at.selectbox if s.label == "Suite to show").value == folder.name
    assert not at.exception and not at.error, texts(at, "error")
    results = table_with(at, "model", "auc", "dev impressions")
    assert set(results["dev impressions"]) == {f"{count:,}"}
    assert any(f"on {count:,} dev impressions" in c for c in texts(at, "caption"))
    segments = next(df.value for df in at.dataframe if any("imp." in str(col) for col in df.value.columns))
    assert all(" imp." in str(col) for col in segments.columns), segments.columns.tolist()


def test_the_run_descriptions_docstring_examples_hold():
    from studio import training

    result = doctest.testmod(training)
    assert result.attempted > 0 and result.failed == 0
