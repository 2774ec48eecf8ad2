"""What the studio's AppTests share: where the app and the shipped model are, one app home per
test module (as one app would have), and small helpers to open, move through and check pages."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "main.py"
SHIPPED = REPO / "assets" / "demo_model"
TIMEOUT = 120
CTX_KEY = "_nram_ctx"
STUDIO_ENV = ("NRAM_DEMO_MODEL", "NRAM_DATA_DIRS", "NRAM_RUNS_DIRS", "NRAM_PUBLIC")


@contextlib.contextmanager
def app_home(home: Path, **env: str) -> Iterator[pytest.MonkeyPatch]:
    """The environment of an app whose NRAM_HOME is ``home``: none of the studio's other variables
    set (``env`` sets some), no network for downloads; on leaving, no training thread left running."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NRAM_HOME", str(home))
        mp.setenv("NRAM_MIND_BASE_URL", "http://127.0.0.1:9")  # nothing listens there: no network
        for name in STUDIO_ENV:
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield mp
        from studio.cache import training_job

        training_job().cancel()
        training_job().join(60)


def new_app(*, timeout: float = TIMEOUT) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    assert_clean(at)
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def ctx(at: AppTest):
    return at.session_state[CTX_KEY]


def fill_train_form(at: AppTest, **values) -> None:
    """Fill the Train page's form (``values``: widget key stems of the demo preset, e.g. ``epochs=1``,
    ``name="run"``) and press Start training."""
    for key, value in values.items():
        widget = at.text_input(key=f"tf_{key}_demo") if key == "name" else at.number_input(key=f"tf_{key}_demo")
        widget.set_value(value)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, [e.value for e in at.exception]
