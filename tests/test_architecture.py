"""The layering the architecture doc promises: the core never imports a UI library, and the
terminal's progress bars and flags belong to the CLI (nram_core/cli/), which no core module imports."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_LIBRARIES = ("streamlit", "plotly", "altair")
CLI = REPO / "nram_core" / "cli"

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


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, lazy ones included."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def core_sources(*, with_cli: bool) -> list[Path]:
    return [path for path in sorted((REPO / "nram_core").rglob("*.py"))
            if with_cli or (CLI not in path.parents and path.name != "__main__.py")]


def test_no_core_source_imports_a_ui_library_even_lazily():
    offenders = [f"{path.relative_to(REPO)}:{line} {name}" for path in core_sources(with_cli=True)
                 for line, name in imported_modules(path) if name.split(".")[0] in UI_LIBRARIES]
    assert not offenders, offenders


def test_progress_bars_and_the_cli_stay_out_of_the_core():
    """The core reports progress through callbacks; only the CLI draws bars (tqdm) and the core
    never imports the CLI."""
    offenders = [f"{path.relative_to(REPO)}:{line} {name}" for path in core_sources(with_cli=False)
                 for line, name in imported_modules(path)
                 if name.split(".")[0] == "tqdm" or name == "nram_core.cli" or name.startswith("nram_core.cli.")]
    assert not offenders, offenders
    assert any(name.split(".")[0] == "tqdm" for line, name in imported_modules(CLI / "progress.py"))


def test_core_messages_name_no_command_line_flag():
    """Core errors name paths and fields; the CLI (nram_core/cli/) adds its flags when it prints them."""
    offenders = []
    for path in core_sources(with_cli=False):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = " ".join(c.value for c in ast.walk(node.exc)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if " --" in f" {text}" and any(w.startswith("--") and len(w) > 2 and w[2].isalpha()
                                               for w in text.replace("(", " ").split()):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {text[:80]}")
    assert not offenders, offenders
