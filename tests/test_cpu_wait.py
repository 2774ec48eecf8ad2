"""The entry points ask libgomp for its short spin before torch loads (nram_core.cpu_wait)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nram_core.cpu_wait import SHORT_SPIN, short_spin_wait, wait_settings

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_benchmarks_and_the_studio_set_it_before_torch_loads(tmp_path):
    """``import bench`` (every ``python -m bench.NAME``), and the lines of app/main.py above its call,
    import nothing that loads torch first."""
    out = _child("import os, sys, bench; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)", _clean_env())
    assert out == f"{SHORT_SPIN} False"
    main = (ROOT / "app" / "main.py").read_text(encoding="utf-8")
    call = main.index("\nshort_spin_wait()")  # the module-level call, and every line above it
    top = main[: main.index("\n", call + 1) + 1]
    script = tmp_path / "main_top.py"
    script.write_text(top + "import os, sys\nprint(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)\n",
                      encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], env=_clean_env(), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"{SHORT_SPIN} False"


def test_wait_settings_reports_both():
    assert wait_settings({"OMP_WAIT_POLICY": "PASSIVE"}) == {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "PASSIVE"}
