"""Impression ids go out as they came in, and a row with an id or time outside what can be stored
is a counted skip (or, with --strict and in predict's complete mode, one line with exit 2)."""
import json
import zipfile
from pathlib import Path

import pytest

from nram_core.cli import main
from nram_core.data import read_behaviors
from nram_core.data.split import load_split
from nram_core.data.text import Vocab
from nram_core.fileio import DataError

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
NEWS = [
    "N1\tsports\tfootball_nfl\tQuarterback wins the game\tabs\turl\t[]\t[]",
    "N2\tnews\tnewspolitics\tSenate passes the budget\tabs\turl\t[]\t[]",
    "N3\tsports\tgolf\tGolfer sinks a putt\tabs\turl\t[]\t[]",
    "N4\tnews\tnewsworld\tSummit ends as leaders meet\tabs\turl\t[]\t[]",
]
INDEX = {f"N{i}": i for i in range(1, 5)}
TIME = "11/15/2019 7:11:50 AM"
HOSTILE_IDS = ["+5", "1_000", "\u0663", " 5", "5 ", "-5"]  # each one that int() accepts


def row(imp_id: str, user: str = "U1", time: str = TIME, impressions: str = "N3-1 N4-0") -> str:
    return f"{imp_id}\t{user}\t{time}\tN1 N2\t{impressions}"


def write_split(folder: Path, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    (folder / "behaviors.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str, *words: str) -> bool:
    """Exit 2, the error one line (the last on stderr), no traceback, nothing on stdout."""
    lines = err.splitlines()
    return (code == 2 and bool(lines) and lines[-1].startswith("error: ") and err.count("error: ") == 1
            and "Traceback" not in err and not out and all(w in lines[-1] for w in words))


def test_predict_writes_ids_exactly_as_behaviors_tsv_has_them(tmp_path, capsys):
    ids = ["007", "10", "0", "000", "9223372036854775807", "00009223372036854775807"]
    folder = write_split(tmp_path / "dev", [row(i, user=f"U{n}") for n, i in enumerate(ids)])
    code, _, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", folder, "--out", tmp_path / "out")
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "out" / "prediction.zip") as archive:
        text = archive.read("prediction.txt").decode()
    assert [line.split(" ")[0] for line in text.splitlines()] == ids
    assert (tmp_path / "out" / "prediction.txt").read_text() == text


def test_ids_as_written_survive_the_prepared_split_cache(tmp_path):
    folder = write_split(tmp_path / "dev", [row("007"), row("42", user="U2")])
    vocab = Vocab.build([n.split("\t")[3] for n in NEWS], min_count=1)
    parsed = load_split("dev", folder, vocab, title_len=8)
    cached = load_split("dev", folder, vocab, title_len=8)  # the second load reads NRAM_HOME/prepared
    assert parsed.behaviors.impression_id_texts() == cached.behaviors.impression_id_texts() == ["007", "42"]
    assert cached.behaviors.impression_ids.tolist() == [7, 42]


@pytest.mark.parametrize("imp_id", HOSTILE_IDS)
def test_an_id_that_is_not_ascii_digits_is_a_counted_skip_or_one_line(tmp_path, imp_id):
    folder = write_split(tmp_path / "s", [row("1"), row(imp_id), row("3")])
    behaviors = read_behaviors(folder / "behaviors.tsv", INDEX)
    assert behaviors.report.skipped == {"bad_impression_id": 1}
    assert behaviors.report.first_lines == {"bad_impression_id": [2]}
    assert behaviors.impression_id_texts() == ["1", "3"]
    with pytest.raises(DataError, match=r"behaviors\.tsv:2: field 'impression_id': not ASCII digits") as error:
        read_behaviors(folder / "behaviors.tsv", INDEX, strict=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("imp_id", ["+5", "1_000", "\u0663"])
def test_predict_refuses_an_id_it_could_not_write_back(tmp_path, capsys, imp_id):
    """predict keeps every row (a leaderboard file lists them all), so a bad id is one line, not a skip."""
    folder = write_split(tmp_path / "test", [row("1", impressions="N3 N4"), row(imp_id, impressions="N4 N3")])
    code, out, err = run_cli(capsys, "predict", "--run", SHIPPED, "--data", folder, "--out", tmp_path / "out")
    assert refused(code, out, err, "behaviors.tsv:2: field 'impression_id'")
    assert not (tmp_path / "out" / "prediction.zip").exists()


OUT_OF_RANGE = {
    "impression_id_out_of_range": (row("99999999999999999999", user="U2"), "impression_id"),
    "bad_time": (row("3", user="U3", time="01/01/0000 12:00:00 AM"), "time"),
}


def test_an_int64_overflow_id_and_a_year_0_time_are_counted_skips(tmp_path):
    rows = [row("1")] + [r for r, _ in OUT_OF_RANGE.values()] + [row("9223372036854775808", user="U4")]
    folder = write_split(tmp_path / "s", rows)
    behaviors = read_behaviors(folder / "behaviors.tsv", INDEX)
    assert behaviors.report.skipped == {"impression_id_out_of_range": 2, "bad_time": 1}
    assert behaviors.report.first_lines == {"impression_id_out_of_range": [2, 4], "bad_time": [3]}
    assert behaviors.impression_ids.tolist() == [1]


def test_evaluate_skips_and_counts_them_and_strict_refuses_each_in_one_line(tmp_path, capsys):
    rows = [row("1"), *(r for r, _ in OUT_OF_RANGE.values()), row("4", user="U4", impressions="N4-1 N3-0")]
    folder = write_split(tmp_path / "dev", rows)
    code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", folder)
    assert code == 0, err
    assert json.loads(out)["impressions"] == 2
    assert "skipped 1 (impression_id_out_of_range), first at line 2" in err
    assert "skipped 1 (bad_time), first at line 3" in err and "Traceback" not in err
    for lineno, (bad, field) in enumerate(OUT_OF_RANGE.values(), start=2):
        folder = write_split(tmp_path / f"strict{lineno}", [row("1"), bad])
        code, out, err = run_cli(capsys, "evaluate", "--run", SHIPPED, "--data", folder, "--strict")
        assert refused(code, out, err, "behaviors.tsv:2:", f"field '{field}'"), err
