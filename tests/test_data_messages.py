"""One-line messages for hostile data files: word-vector files (non-finite values, nothing found, not a
regular file), over-long behaviors/news lines (a capped read, a counted skip or a file:line error), and
split folders whose news.tsv or behaviors.tsv is there but unusable (named, never "no dev split")."""
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_data import GOOD_BEHAVIOR, NEWS, write_split

from nram_core.cli import main
from nram_core.data import mind, resolve_layout
from nram_core.data.mind import MAX_LINE_BYTES, read_behaviors, read_news
from nram_core.data.text import Vocab, load_glove
from nram_core.data.vectors import check_choice, word_vectors
from nram_core.fileio import DataError

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "demo_model"  # the model the repository ships
VOCAB = Vocab.build(["alpha beta gamma"])
TWENTY_MIB = 20 << 20


def _glove(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "glove.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# ---- 1. word vectors ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "1e39"])
def test_a_non_finite_vector_is_refused_at_load_naming_file_and_line(tmp_path, value):
    path = _glove(tmp_path, f"zeta 1 2\nbeta 1 2\nalpha 0.5 {value}\n")
    with pytest.raises(DataError) as info:
        load_glove(path, VOCAB, dim=2)
    message = str(info.value)
    assert message.startswith(f"{path}:3: field 'vector' of 'alpha' holds {value!r}, not a finite float32")
    assert "\n" not in message and info.value.settings == ("word_vectors",)


def test_a_non_finite_value_of_a_word_outside_the_vocabulary_is_never_parsed(tmp_path):
    result = load_glove(_glove(tmp_path, "zeta nan nan\nbeta 1 2\n"), VOCAB, dim=2)
    assert result.found == 1 and np.isfinite(result.vectors).all()


@pytest.mark.parametrize("content", [
    b"",  # empty
    b"\xff\xfealpha 1 2\n\xe9beta 3 4\n",  # not UTF-8: no word decodes to a vocabulary word
    b"alpha\t1\t2\nbeta\t3\t4\n",  # tab-separated
    b"zeta 1 2\n",  # well formed, but none of the vocabulary
], ids=["empty", "not_utf8", "tab_separated", "no_vocabulary_word"])
def test_a_file_with_no_word_of_the_vocabulary_is_refused(tmp_path, content):
    path = _glove(tmp_path, content)
    with pytest.raises(DataError) as info:
        load_glove(path, VOCAB, dim=2)
    assert str(info.value) == (f"{path}: no word of the vocabulary found (is it a GloVe text file: word then "
                               f"numbers, space-separated?)")


def test_a_vocabulary_without_words_needs_none_found(tmp_path):
    empty_vocab = Vocab.build([])
    assert load_glove(_glove(tmp_path, ""), empty_vocab, dim=2).found == 0


def test_a_good_file_still_loads_with_crlf_line_ends(tmp_path):
    result = load_glove(_glove(tmp_path, "beta 1 2\r\nalpha 3 4\r\n"), VOCAB, dim=2)
    assert result.found == 2 and list(result.vectors[VOCAB.index["alpha"]]) == [3, 4]


def test_a_vectors_path_that_is_not_a_regular_file_says_so(tmp_path):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)  # opening it for reading would block: only stat may touch it
    (tmp_path / "folder").mkdir()
    for path in ("/dev/zero", fifo, tmp_path / "folder"):
        with pytest.raises(DataError, match=r"^word vectors .*: not a regular file \(use 'corpus'"):
            check_choice(str(path))
        with pytest.raises(DataError, match=r": not a regular file$"):  # the loader checks too, on its descriptor
            load_glove(path, VOCAB, dim=2)
    with pytest.raises(DataError, match=r"missing\.txt: no such file"):
        check_choice(str(tmp_path / "missing.txt"))


def test_cli_train_refuses_bad_vector_files_in_one_line_before_an_epoch(demo_corpus, tmp_path, capsys):
    flags = ["--no-progress", "--epochs", "1", "--max-impressions", "20", "--max-dev-impressions", "10",
             "--word-dim", "16", "--num-heads", "2", "--head-dim", "8", "--query-dim", "16"]
    cases = {"nan": ("the" + " nan" * 16 + "\n", "glove.txt:1: field 'vector' of 'the' holds 'nan'"),
             "tabs": ("the" + "\t0.1" * 16 + "\n", "no word of the vocabulary found"),
             "dev_zero": (None, "word vectors /dev/zero: not a regular file")}
    for name, (content, words) in cases.items():
        path = "/dev/zero" if content is None else _glove(tmp_path, content)
        out = tmp_path / name
        code = main(["train", "--data", str(demo_corpus), "--out", str(out), "--word-vectors", str(path), *flags])
        captured = capsys.readouterr()
        assert code == 2 and not captured.out, (name, captured.err)
        last = captured.err.splitlines()[-1]
        assert last.startswith("error: ") and words in last and "Traceback" not in captured.err, (name, last)
        assert not (out / "state.json").exists()


def test_word_vectors_refuses_at_load_whatever_the_strictness(demo_corpus, tmp_path):
    layout = resolve_layout(demo_corpus)
    vocab = Vocab.build(["the"])
    path = _glove(tmp_path, "the inf 0\n")
    for strict in (False, True):
        with pytest.raises(DataError, match="glove.txt:1"):
            word_vectors(str(path), layout=layout, vocab=vocab, dim=2, seed=0, strict=strict)


# ---- 2. over-long lines ---------------------------------------------------------------------------------
def _behaviors_with_long_line(folder: Path, *, length: int = TWENTY_MIB) -> Path:
    """behaviors.tsv: a good row, a ``length``-byte row of a 'history' without a tab, then two good rows."""
    write_split(folder)
    path = folder / "behaviors.tsv"
    with open(path, "wb") as handle:
        handle.write(GOOD_BEHAVIOR.encode() + b"\n")
        handle.write(b"2\tU2\t11/15/2019 7:11:50 AM\t" + b"N1 " * (length // 3) + b"\n")
        handle.write(GOOD_BEHAVIOR.replace("1\tU1", "3\tU3").encode() + b"\n")
        handle.write(b"4\tU4\tnot a time\tN1\tN3-1 N4-0\n")  # a bad row after the long one: its number must hold
    return path


def test_a_line_past_the_cap_is_a_counted_skip_and_later_lines_keep_their_numbers(tmp_path):
    path = _behaviors_with_long_line(tmp_path / "dev")
    raw = read_behaviors(path, {n.split("\t")[0]: i + 1 for i, n in enumerate(NEWS)})
    assert raw.impression_id_texts() == ["1", "3"]
    assert raw.report.rows == 4 and raw.report.kept == 2
    assert raw.report.skipped == {"line_too_long": 1, "bad_time": 1}
    assert raw.report.first_lines == {"line_too_long": [2], "bad_time": [4]}
    assert "skipped 1 (line_too_long), first at line 2" in raw.report.summary()


def test_a_line_past_the_cap_is_one_error_naming_file_and_line_under_strict(tmp_path):
    path = _behaviors_with_long_line(tmp_path / "dev")
    with pytest.raises(DataError) as info:
        read_behaviors(path, {"N1": 1, "N3": 3, "N4": 4}, strict=True)
    assert str(info.value) == f"{path}:2: field 'row': longer than {MAX_LINE_BYTES:,} bytes"


def test_a_news_line_past_the_cap_is_counted_too(tmp_path):
    folder = write_split(tmp_path / "dev")
    with open(folder / "news.tsv", "ab") as handle:
        handle.write(b"N9\tnews\tx\t" + b"word " * (TWENTY_MIB // 5))  # no newline at all, up to the end
    news = read_news(folder / "news.tsv")
    assert news.ids == ["N1", "N2", "N3", "N4"] and news.report.first_lines == {"line_too_long": [5]}


def test_a_line_of_exactly_the_cap_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(mind, "MAX_LINE_BYTES", len(GOOD_BEHAVIOR))
    folder = write_split(tmp_path / "dev", behaviors=(GOOD_BEHAVIOR, GOOD_BEHAVIOR.replace("N1 N2", "N1 N2 N3")))
    raw = read_behaviors(folder / "behaviors.tsv", {"N1": 1, "N2": 2, "N3": 3, "N4": 4})
    assert raw.report.kept == 1 and raw.report.first_lines == {"line_too_long": [2]}


def test_the_memory_a_long_line_costs_follows_the_cap_not_the_line(tmp_path, monkeypatch):
    """With the cap at 1 MiB a 20 MiB line costs a few MiB: its bytes are read in pieces and dropped."""
    monkeypatch.setattr(mind, "MAX_LINE_BYTES", 1 << 20)
    path = _behaviors_with_long_line(tmp_path / "dev")
    tracemalloc.start()
    try:
        raw = read_behaviors(path, {"N1": 1, "N3": 3, "N4": 4})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raw.report.first_lines["line_too_long"] == [2]
    assert peak < 5 << 20, peak  # reading the whole line (as before the cap) holds 20 MiB at least


def test_a_behaviors_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    folder = write_split(tmp_path / "dev")
    (folder / "behaviors.tsv").unlink()
    os.mkfifo(folder / "behaviors.tsv")
    with pytest.raises(DataError, match=r"behaviors\.tsv: not a regular file$"):
        read_behaviors(folder / "behaviors.tsv", {})


# ---- 3. split folders that are there but unusable ---------------------------------------------------------
def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize("name", ["news.tsv", "behaviors.tsv"])
@pytest.mark.parametrize("make, words", [
    (lambda p: None, ": no such file (a split folder holds news.tsv and behaviors.tsv)"),
    (Path.mkdir, ": not a regular file"),
    (_fifo, ": not a regular file"),
    (_dev_zero, ": not a regular file"),
], ids=["missing", "directory", "fifo", "dev_zero_link"])
def test_an_unusable_dev_file_is_named_not_reported_as_no_dev_split(tmp_path, name, make, words):
    root = tmp_path / "corpus"
    write_split(root / "train")
    write_split(root / "dev")
    (root / "dev" / name).unlink()
    make(root / "dev" / name)
    with pytest.raises(DataError) as info:
        resolve_layout(root)
    assert str(info.value) == f"{root / 'dev' / name}{words}"


def test_split_folders_that_are_empty_or_files_are_named(tmp_path):
    root = tmp_path / "corpus"
    write_split(root / "train")
    (root / "dev").mkdir()
    with pytest.raises(DataError, match=r"/dev: holds neither news\.tsv nor behaviors\.tsv$"):
        resolve_layout(root)
    (root / "dev").rmdir()
    (root / "dev").write_text("not a folder\n")
    with pytest.raises(DataError, match=r"/dev: not a folder"):
        resolve_layout(root)
    (root / "dev").unlink()
    assert resolve_layout(root).dev is None  # no dev/ at all: a train-only root, as before
    # A usable dev split elsewhere (the official name) wins over nothing else being wrong.
    write_split(root / "MINDsmall_dev")
    assert resolve_layout(root).dev == root / "MINDsmall_dev"


def test_a_root_or_explicit_split_folder_with_a_bad_file_names_it(tmp_path):
    folder = write_split(tmp_path / "split")
    (folder / "news.tsv").unlink()
    os.mkfifo(folder / "news.tsv")
    for layout_args in ({"data": folder}, {"dev": folder}):
        with pytest.raises(DataError, match=rf"^{folder}/news\.tsv: not a regular file$"):
            resolve_layout(**layout_args)
    with pytest.raises(DataError, match=r"^/dev/zero: not a regular file or folder$"):
        resolve_layout("/dev/zero")


def test_cli_evaluate_names_the_unusable_dev_file(tmp_path, capsys):
    root = tmp_path / "corpus"
    write_split(root / "train")
    write_split(root / "dev")
    (root / "dev" / "news.tsv").unlink()
    os.mkfifo(root / "dev" / "news.tsv")
    code = main(["evaluate", "--run", str(SHIPPED), "--data", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{root / 'dev' / 'news.tsv'}: not a regular file" in err and "no dev split" not in err


def test_a_zip_of_one_split_given_as_data_is_scored_as_that_split(demo_corpus, tmp_path, capsys):
    """`--data split.zip` scores the split in the zip, as `--data split_folder` does (it said
    "has no dev split" before)."""
    import json
    import zipfile

    from nram_core.cli import main

    archive = tmp_path / "MINDdemo_dev.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("news.tsv", "behaviors.tsv"):
            zf.write(demo_corpus / "dev" / name, name)
    figures = []
    for data in (archive, demo_corpus / "dev"):
        run = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
        assert main(["evaluate", "--run", str(run), "--data", str(data), "--max-impressions", "100"]) == 0
        figures.append(json.loads(capsys.readouterr().out)["auc"])
    assert figures[0] == figures[1]
