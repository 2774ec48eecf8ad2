"""The leaderboard path and honest CLI results: predict writes a line per behaviors row in MIND's
format, evaluate agrees with the official formulas on predict's own ranks, test splits have no
labels, and every refusal is one line with exit code 2."""
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nram_core.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
LINE = re.compile(r"^(\d+) \[(\d+(?:,\d+)*)\]$")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str) -> bool:
    """Exit 2, the error as one line (the last on stderr, after any report of skipped rows), no
    traceback, and nothing on stdout."""
    lines = err.splitlines()
    return (code == 2 and bool(lines) and lines[-1].startswith("error: ") and err.count("error: ") == 1
            and err.endswith("\n") and "Traceback" not in err and not out)


def strip_labels(behaviors: str) -> str:
    rows = []
    for line in behaviors.splitlines():
        fields = line.split("\t")
        fields[4] = " ".join(item.rpartition("-")[0] for item in fields[4].split())
        rows.append("\t".join(fields))
    return "\n".join(rows) + "\n"


def check_format(prediction: Path, behaviors: Path) -> list[list[int]]:
    """MIND's scorer rules: one line per row in order, `ImpId [r1,...]` without spaces, ranks a
    permutation of 1..n for that row's n candidates, a trailing newline; returns the ranks."""
    text = prediction.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    rows = [line.split("\t") for line in behaviors.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    lines = text[:-1].split("\n")
    assert len(lines) == len(rows)
    all_ranks = []
    for line, row in zip(lines, rows):
        match = LINE.fullmatch(line)
        assert match, line
        assert match.group(1) == row[0]
        ranks = [int(r) for r in match.group(2).split(",")]
        assert sorted(ranks) == list(range(1, len(row[4].split()) + 1)), (line, row[4])
        all_ranks.append(ranks)
    with zipfile.ZipFile(prediction.with_suffix(".zip")) as archive:
        assert archive.namelist() == ["prediction.txt"]
        assert archive.read("prediction.txt").decode() == text
    return all_ranks


def official_scores(ranks: list[list[int]], behaviors: Path) -> dict[str, float]:
    """evaluate.py's formulas on 1/rank (its own code is not shipped; these are its definitions).
    Impressions without both a click and a non-click are left out, as our evaluate does."""
    def dcg(y, score, k):
        order = np.argsort(score)[::-1]
        gains = 2 ** np.take(y, order[:k]) - 1
        return np.sum(gains / np.log2(np.arange(len(gains)) + 2))

    out = {"auc": [], "mrr": [], "ndcg@5": [], "ndcg@10": []}
    rows = [line.split("\t") for line in behaviors.read_text().splitlines() if line.strip()]
    for row, row_ranks in zip(rows, ranks):
        y = np.array([int(item.rpartition("-")[2]) for item in row[4].split()], dtype=float)
        if y.min() == y.max():
            continue
        score = [1.0 / r for r in row_ranks]
        order = np.argsort(score)[::-1]
        out["auc"].append(roc_auc_score(y, score))
        out["mrr"].append(np.sum(np.take(y, order) / (np.arange(len(y)) + 1)) / np.sum(y))
        for k in (5, 10):
            out[f"ndcg@{k}"].append(dcg(y, score, k) / dcg(y, y, k))
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def test_split(demo_corpus, tmp_path_factory):
    """The demo dev split as MIND's test split looks: no labels. Plus three rows a real test file
    can hold: a candidate with no news row, a row whose candidates are all unknown, a cold user."""
    folder = tmp_path_factory.mktemp("test_split") / "MINDdemo_test"
    shutil.copytree(demo_corpus / "dev", folder)
    text = strip_labels((folder / "behaviors.tsv").read_text())
    text += ("900001\tU_new\t11/15/2019 9:05:58 AM\t\tNUNKNOWN1 " + text.split("\t")[4].split()[0] + "\n"
             "900002\tU_new2\t11/15/2019 9:06:58 AM\tNUNKNOWN2\tNUNKNOWN3 NUNKNOWN4 NUNKNOWN5\n")
    (folder / "behaviors.tsv").write_text(text)
    return folder


def test_predict_ranks_every_row_of_an_unlabelled_test_split(test_split, tmp_path, capsys):
    code, out, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", test_split, "--out", tmp_path)
    assert code == 0, err
    report = json.loads(out)
    ranks = check_format(tmp_path / "prediction.txt", test_split / "behaviors.tsv")
    assert report["impressions"] == len(ranks) and report["labelled_impressions"] == 0
    assert report["unknown_candidates"] == 4 and report["cold_users"] >= 1
    assert ranks[-1] == [1, 2, 3]  # all unknown: equal scores, listed order (the tie rule)


def test_predict_ranks_in_blocks_gives_the_same_file_and_zip(demo_corpus, tmp_path, capsys, monkeypatch):
    """A MIND-large test split (2.4M impressions) is ranked and written a block of impressions at a
    time; blocks of 7 give the bytes of one block, in prediction.txt and inside prediction.zip."""
    from nram_core import predict

    code, _, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", demo_corpus, "--out", tmp_path / "one")
    assert code == 0, err
    monkeypatch.setattr(predict, "PREDICT_BLOCK", 7)
    code, _, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", demo_corpus, "--out", tmp_path / "blocks")
    assert code == 0, err
    whole = (tmp_path / "one" / "prediction.txt").read_bytes()
    assert whole.count(b"\n") == len((demo_corpus / "dev" / "behaviors.tsv").read_text().splitlines())
    assert (tmp_path / "blocks" / "prediction.txt").read_bytes() == whole
    with zipfile.ZipFile(tmp_path / "blocks" / "prediction.zip") as archive:
        assert archive.namelist() == ["prediction.txt"] and archive.read("prediction.txt") == whole


def test_evaluate_refuses_a_split_without_labels(test_split, capsys):
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", test_split)
    assert refused(code, out, err) and "has no labels" in err


def test_evaluate_reproduces_the_official_scorer_on_predicts_ranks(demo_corpus, tmp_path, capsys):
    code, out, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", demo_corpus, "--out", tmp_path)
    assert code == 0, err
    ranks = check_format(tmp_path / "prediction.txt", demo_corpus / "dev" / "behaviors.tsv")
    official = official_scores(ranks, demo_corpus / "dev" / "behaviors.tsv")
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", demo_corpus)
    assert code == 0, err
    ours = json.loads(out)
    for key, value in official.items():
        assert ours[key] == pytest.approx(value, abs=2e-6), key  # ours is rounded to 6 decimals
    assert ours["skipped_impressions"] == 0 and ours["split"] == str(demo_corpus / "dev")


def test_evaluate_with_nothing_scorable_is_refused_and_json_stays_strict(demo_corpus, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(demo_corpus, root)
    rows = (root / "dev" / "behaviors.tsv").read_text().splitlines()
    only_clicks = [r.split("\t") for r in rows[:20]]
    for r in only_clicks:
        r[4] = " ".join(item.rpartition("-")[0] + "-1" for item in r[4].split())
    (root / "dev" / "behaviors.tsv").write_text("".join("\t".join(r) + "\n" for r in only_clicks))
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", root)
    assert refused(code, out, err) and "nothing to score" in err and "NaN" not in out + err
    (root / "dev" / "behaviors.tsv").write_text("")
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", root)
    assert refused(code, out, err)


def test_evaluate_never_scores_another_split_than_asked(demo_corpus, tmp_path, capsys):
    root = tmp_path / "train_only"
    shutil.copytree(demo_corpus / "train", root / "train")
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", root)
    assert refused(code, out, err) and "no dev split" in err and "--split train" in err
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", root, "--split", "train",
                             "--max-impressions", 50)
    assert code == 0, err
    assert json.loads(out)["split"] == str(root / "train")


def test_a_byte_order_mark_is_not_part_of_the_first_news_id(demo_corpus, tmp_path, capsys):
    from nram_core.data.mind import read_behaviors, read_news

    folder = tmp_path / "bom"
    shutil.copytree(demo_corpus / "dev", folder)
    news = folder / "news.tsv"
    news.write_bytes(b"\xef\xbb\xbf" + news.read_bytes())
    for strict in (False, True):
        raw = read_news(news, strict=strict)
        first = raw.ids[0]
        assert first.startswith("N") and "\ufeff" not in first
        index = {n: i + 1 for i, n in enumerate(raw.ids)}
        behaviors = read_behaviors(folder / "behaviors.tsv", index, strict=strict)
        assert not behaviors.report.dropped and not behaviors.report.skipped


def test_unlabelled_rows_are_parsed_and_mixed_rows_are_bad(tmp_path):
    from nram_core.data.mind import UNLABELLED, read_behaviors

    path = tmp_path / "behaviors.tsv"
    path.write_text("1\tU1\t11/15/2019 9:05:58 AM\tN1\tN1 N2\n"
                    "2\tU1\t11/15/2019 9:05:58 AM\tN1\tN1 N2-1\n"
                    "3\tU2\t11/15/2019 9:05:58 AM\t\tN1-0 N2-1\n")
    b = read_behaviors(path, {"N1": 1, "N2": 2})
    assert b.impression_ids.tolist() == [1, 3] and b.report.skipped == {"bad_impression_label": 1}
    assert b.labels.tolist() == [UNLABELLED, UNLABELLED, 0, 1] and b.labelled.tolist() == [False, True]


@pytest.mark.parametrize("argv, words", [
    (["recommend", "--top", "0"], "must be >= 1"),
    (["recommend", "--top", "-5"], "must be >= 1"),
    (["evaluate", "--device", "tpu"], "unknown device"),
    (["evaluate", "--no-such-flag"], "unrecognized arguments"),
    (["no-such-command"], "invalid choice"),
])
def test_argument_errors_are_one_line(argv, words, capsys):
    extra = ["--run", str(SHIPPED), "--data", "/nowhere"] + (["--user", "U1"] if argv[0] == "recommend" else [])
    with pytest.raises(SystemExit) as exited:
        main(argv + (extra if argv[0] != "no-such-command" else []))
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and refused(2, out, err) and words in err and "--help" in err


def test_os_errors_are_one_line(demo_corpus, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", demo_corpus, "--out", blocker)
    assert refused(code, out, err) and "a_file" in err
    code, out, err = run_cli(capsys, "train", "--data", demo_corpus, "--out", blocker / "run", "--max-steps", 1,
                             "--word-vectors", "none", "--no-progress")
    assert refused(code, out, err)
