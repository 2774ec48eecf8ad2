"""The entry points ask libgomp for its short spin before torch loads (nram_core.cpu_wait)."""
from __future__ import annotations

import os
import subprocess
import sys

from nram_core.cpu_wait import SHORT_SPIN, short_spin_wait, wait_settings


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}


def _child(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_sets_the_short_spin_when_nothing_was_chosen():
    env: dict[str, str] = {}
    if "torch" in sys.modules:  # this process is past the point of choosing: nothing is set
        assert short_spin_wait(env) is False and env == {}
    out = _child("import os; from nram_core.cpu_wait import short_spin_wait; "
                 "print(short_spin_wait(), os.environ['GOMP_SPINCOUNT'])", _clean_env())
    assert out == f"True {SHORT_SPIN}"


def test_a_users_choice_stands():
    for chosen in ({"GOMP_SPINCOUNT": "5"}, {"OMP_WAIT_POLICY": "ACTIVE"}):
        env = dict(chosen)
        assert short_spin_wait(env) is False
        assert env == chosen
    out = _child("import os; from nram_core.cpu_wait import short_spin_wait; "
                 "print(short_spin_wait(), os.environ['GOMP_SPINCOUNT'])", {**_clean_env(), "GOMP_SPINCOUNT": "5"})
    assert out == "False 5"


def test_too_late_once_torch_is_loaded():
    out = _child("import os, torch; from nram_core.cpu_wait import short_spin_wait; "
                 "print(short_spin_wait(), os.environ.get('GOMP_SPINCOUNT'))", _clean_env())
    assert out == "False None"


def test_the_cli_sets_it_before_torch_loads():
    code = ("import os, runpy, sys\n"
            "sys.argv = ['nram_core', '--help']\n"
            "try:\n    runpy.run_module('nram_core', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(os.environ.get('GOMP_SPINCOUNT'))\n")
    assert _child(code, _clean_env()).splitlines()[-1] == str(SHORT_SPIN)


def test_wait_settings_reports_both():
    assert wait_settings({"OMP_WAIT_POLICY": "PASSIVE"}) == {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "PASSIVE"}
