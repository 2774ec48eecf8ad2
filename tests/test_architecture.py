"""The layering the architecture doc promises: the core never imports a UI library."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_LIBRARIES = ("streamlit", "plotly", "altair")

IMPORT_EVERY_CORE_MODULE = """
import importlib, pkgutil, sys
import nram_core
for module in pkgutil.walk_packages(nram_core.__path__, "nram_core."):
    if module.name != "nram_core.__main__":  # that one runs the CLI
        importlib.import_module(module.name)
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in {libraries!r})))
"""


def test_importing_every_core_module_loads_no_ui_library():
    code = IMPORT_EVERY_CORE_MODULE.format(libraries=set(UI_LIBRARIES))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", f"nram_core pulled in: {done.stdout.strip()}"


def test_no_core_source_imports_a_ui_library_even_lazily():
    offenders = []
    for path in sorted((REPO / "nram_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in UI_LIBRARIES]
    assert not offenders, offenders


def test_core_messages_name_no_command_line_flag():
    """Core errors name paths and fields; the CLI (cli.py) adds its flags when it prints them."""
    offenders = []
    for path in sorted((REPO / "nram_core").rglob("*.py")):
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = " ".join(c.value for c in ast.walk(node.exc)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if " --" in f" {text}" and any(w.startswith("--") and len(w) > 2 and w[2].isalpha()
                                               for w in text.replace("(", " ").split()):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {text[:80]}")
    assert not offenders, offenders
