"""A scoring command imports only what it uses (issue 29): no compiler stack (torch._dynamo), no
gensim, no pandas. Checked in a fresh interpreter, since the test process has imported them all."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import sys
from nram_core.cli import main
code = main(sys.argv[1:])
heavy = [name for name in ("torch._dynamo", "gensim", "pandas", "sympy", "streamlit") if name in sys.modules]
print("HEAVY", heavy, code)
"""


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_scoring_command_imports_no_compiler_gensim_or_pandas(command, demo_corpus, tmp_path):
    extra = ["--out", str(tmp_path)] if command == "predict" else []
    done = subprocess.run([sys.executable, "-c", CHECK, command, "--run", str(ROOT / "assets" / "demo_model"),
                           "--data", str(demo_corpus), *extra], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NRAM_HOME": str(tmp_path / "home")}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "HEAVY [] 0" in done.stdout, done.stdout + done.stderr
    if command == "evaluate":
        assert json.loads(done.stdout.splitlines()[0])["impressions"] > 0


def test_building_for_shapes_allocates_and_initialises_nothing():
    import torch

    from nram_core.config import ModelConfig
    from nram_core.memory import parameter_bytes, shapes_only
    from nram_core.model import NRAM

    with shapes_only():
        model = NRAM(ModelConfig(vocab_size=10**8))  # 120 GB of word vectors if it were real
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert parameter_bytes(model) > 10**8 * 300 * 4
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"  # the mode ends with the block
