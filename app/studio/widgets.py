"""Choosing a widget's value among options that change (another dataset, model or page).

Streamlit refuses a session value its widget cannot show, and forgets or keeps values across
page switches; every keyed choice of the app goes through ``keep_choice`` before its widget is
drawn, and every ``index=`` through ``valid_choice``.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import streamlit as st

FIRST = object()  # the default default: the first option


def valid_choice(value: Any, options: Collection, default: Any = FIRST) -> Any:
    """``value`` when it is one of ``options``, else ``default`` (the first option unless given).

    >>> valid_choice("b", ["a", "b"]), valid_choice("z", ["a", "b"]), valid_choice(None, range(5, 101, 5), 20)
    ('b', 'a', 20)
    """
    try:
        if value in options:
            return value
    except TypeError:  # an unhashable value asked of a dict or set of options: not one of them
        pass
    return next(iter(options)) if default is FIRST else default


def keep_choice(key: str, options: Collection, default: Any = FIRST) -> Any:
    """Before drawing the widget ``key``: its session value when that is still one of ``options``,
    else ``default`` (stored, so the widget shows it); returns the value."""
    current = st.session_state.get(key)
    chosen = valid_choice(current, options, default)
    if key not in st.session_state or chosen is not current:
        st.session_state[key] = chosen
    return chosen
