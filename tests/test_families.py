"""Model families through one pipeline (issue 27): `train --model lstur` trains with the same data,
Trainer and run folder as NRAM; the run records its kind and its users; every scoring command
loads any kind; what only NRAM offers yet is refused in one line."""
import json
from pathlib import Path

import pytest

from nram_core.checkpoint import load_run
from nram_core.config import ModelConfig, preset
from nram_core.families import build_model
from nram_core.lstur import LSTUR
from nram_core.model import NRAM

from test_nonfinite import TINY_FLAGS, error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
LSTUR_FLAGS = ["--model", "lstur", "--filters", "32", "--category-dim", "8", "--max-impressions", "150"]


@pytest.fixture(scope="module")
def lstur_run(demo_corpus, tmp_path_factory):
    from nram_core.cli import main

    out = tmp_path_factory.mktemp("runs") / "lstur"
    assert main(["train", "--data", str(demo_corpus), "--out", str(out), *TINY_FLAGS, *LSTUR_FLAGS]) == 0
    return out


def test_the_kind_picks_the_family_and_old_runs_are_nram():
    assert isinstance(build_model(ModelConfig(vocab_size=50)), NRAM)
    model_config, _ = preset("demo", kind="lstur")
    assert model_config.kind == "lstur" and model_config.news_dim == 64 + 2 * 16
    assert load_run(ROOT / "assets" / "demo_model").model_config.kind == "nram"  # saved before kinds existed


def test_an_lstur_run_records_its_kind_and_users_and_every_scoring_command_loads_it(lstur_run, demo_corpus,
                                                                                     tmp_path, capsys):
    config = json.loads((lstur_run / "config.json").read_text())
    users = json.loads((lstur_run / "users.json").read_text())["users"]
    assert config["model"]["kind"] == "lstur" and config["model"]["num_users"] == len(users) and users[0] == ""
    run = load_run(lstur_run)
    assert isinstance(run.model, LSTUR) and run.users is not None and len(run.users) == len(users)
    state = json.loads((lstur_run / "state.json").read_text())
    code, out, err = run_cli(capsys, "evaluate", "--run", lstur_run, "--data", demo_corpus,
                             "--max-impressions", "50")
    assert code == 0, err
    assert json.loads(out)["auc"] == pytest.approx(state["final"]["auc"], abs=1e-6)  # the trainer's own figure
    code, out, err = run_cli(capsys, "predict", "--run", lstur_run, "--data", demo_corpus, "--out", tmp_path)
    assert code == 0 and (tmp_path / "prediction.zip").is_file(), err
    code, out, err = run_cli(capsys, "recommend", "--run", lstur_run, "--data", demo_corpus, "--user", "U5107")
    assert code == 0 and len(out.splitlines()) == 10, err  # the catalog ranked with the user's id
    code, out, err = run_cli(capsys, "explain", "--run", lstur_run, "--data", demo_corpus, "--user", "U5107",
                             "--news", json.loads(out.splitlines()[0])["news_id"])
    explained = json.loads(out)
    assert code == 0 and explained["model"] == "lstur" and "effect" in explained["clicks"][0], err


def test_a_dev_user_unknown_to_the_model_scores_as_the_unknown_user(lstur_run, demo_corpus):
    run = load_run(lstur_run)
    dev = run.load_split("dev", demo_corpus / "dev")
    known = set(run.users.ids[1:])
    unknown = [i for i in range(dev.num_impressions) if dev.behaviors.user_ids[i] not in known]
    assert unknown and all(dev.model_users[i] == 0 for i in unknown)
    assert all(run.users.ids[dev.model_users[i]] == dev.behaviors.user_ids[i]
               for i in range(dev.num_impressions) if i not in set(unknown))


def test_resuming_an_lstur_run_on_data_with_other_users_is_refused(lstur_run, demo_corpus, tmp_path, capsys):
    """The rows of the user embedding stand for the saved users.json: other users would get them."""
    import shutil

    copy, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(lstur_run, copy)
    shutil.copytree(demo_corpus, data)
    behaviors = data / "train" / "behaviors.tsv"
    lines = behaviors.read_text().splitlines(keepends=True)
    fields = lines[0].split("\t")  # an early impression: in the part trained on, not the validation part
    lines[0] = "\t".join([fields[0], "Unew", *fields[2:]])  # one more user, the same words
    behaviors.write_text("".join(lines))
    before = (copy / "state.json").read_bytes()
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", copy, "--resume", *TINY_FLAGS, *LSTUR_FLAGS,
                           "--epochs", "2")
    assert code == 2
    assert "users differ" in error_line(err) or "different model config" in error_line(err)
    assert (copy / "state.json").read_bytes() == before
