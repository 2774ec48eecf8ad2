import zipfile

import numpy as np
import pytest

from nram_core.data import Vocab, load_corpus, load_glove, read_behaviors, read_news, resolve_layout, tokenize
from nram_core.data import text as text_module
from nram_core.data.batching import TrainBatches, gather_histories
from nram_core.fileio import DataError

NEWS = [
    "N1\tsports\tfootball_nfl\tQuarterback wins the game!\tabs\turl\t[]\t[]",
    "N2\tnews\tnewspolitics\tSenate passes the budget\tabs\turl\t[]\t[]",
    "N3\tsports\tgolf\tGolfer sinks a putt\tabs\turl\t[]\t[]",
    "N4\tnews\tnewsworld\tSummit ends, leaders say\tabs\turl\t[]\t[]",
]
GOOD_BEHAVIOR = "1\tU1\t11/15/2019 7:11:50 AM\tN1 N2\tN3-1 N4-0"


def write_split(folder, news=NEWS, behaviors=(GOOD_BEHAVIOR,), raw_tail=b""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    (folder / "behaviors.tsv").write_bytes(("\n".join(behaviors) + "\n").encode() + raw_tail)
    return folder


BAD_ROWS = {
    "field_count": ("2\tU2\t11/15/2019 7:11:50 AM\tN1", "row"),
    "bad_impression_label": ("3\tU3\t11/15/2019 7:11:50 AM\tN1\tN3-2 N4-0", "impressions"),
    "bad_impression_label_missing": ("4\tU4\t11/15/2019 7:11:50 AM\tN1\tN3 N4-0", "impressions"),
    "bad_time": ("5\tU5\t2019-11-15 07:11:50\tN1\tN3-1 N4-0", "time"),
    "bad_impression_id": ("x\tU6\t11/15/2019 7:11:50 AM\tN1\tN3-1 N4-0", "impression_id"),
}


def test_tokenizer_matches_nrms_rule():
    assert tokenize("Why the NFL's MVP? Cowboys, 3-0!") == ["why", "the", "nfl", "s", "mvp", "?", "cowboys", ",",
                                                            "3", "0", "!"]


def test_bad_rows_are_counted_with_line_numbers(tmp_path):
    rows = [GOOD_BEHAVIOR] + [row for row, _ in BAD_ROWS.values()]
    folder = write_split(tmp_path / "s", behaviors=rows,
                         raw_tail=b"9\tU9\t11/15/2019 7:11:50 AM\tN1\tN3-1 \xff\xfe-0\n")
    news = read_news(folder / "news.tsv")
    beh = read_behaviors(folder / "behaviors.tsv", {n: i + 1 for i, n in enumerate(news.ids)})
    report = beh.report
    assert report.rows == 7 and report.kept == 1
    assert report.skipped == {"field_count": 1, "bad_impression_label": 2, "bad_time": 1, "bad_impression_id": 1,
                              "invalid_utf8": 1}
    assert report.first_lines["field_count"] == [2]
    assert report.first_lines["bad_impression_label"] == [3, 4]
    assert report.first_lines["invalid_utf8"] == [7]
    summary = report.summary()
    assert "skipped 2 (bad_impression_label), first at line 3, 4" in summary and "behaviors.tsv" in summary


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_strict_names_file_line_and_field(tmp_path, reason):
    row, field = BAD_ROWS[reason]
    folder = write_split(tmp_path / "s", behaviors=[GOOD_BEHAVIOR, row])
    index = {f"N{i}": i for i in range(1, 5)}
    with pytest.raises(DataError, match=rf"behaviors\.tsv:2: field '{field}'"):
        read_behaviors(folder / "behaviors.tsv", index, strict=True)


def test_strict_on_broken_utf8_and_short_news_rows(tmp_path):
    folder = write_split(tmp_path / "s", raw_tail=b"2\tU2\t11/15/2019 7:11:50 AM\t\tN3-1 \xc3-0\n")
    with pytest.raises(DataError, match=r"behaviors\.tsv:2: field 'row': invalid UTF-8"):
        read_behaviors(folder / "behaviors.tsv", {"N3": 1}, strict=True)
    (folder / "news.tsv").write_text(NEWS[0] + "\nN9\tonly\tthree\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"news\.tsv:2: field 'row': expected 8"):
        read_news(folder / "news.tsv", strict=True)
    assert read_news(folder / "news.tsv").report.skipped == {"field_count": 1}


def test_unresolved_ids_dropped_and_counted_and_empty_history_is_legal(tmp_path):
    rows = [
        "1\tU1\t11/15/2019 7:11:50 AM\tN1 N99 N2\tN3-1 N98-0 N4-0",
        "2\tU2\t11/15/2019 7:11:50 PM\t\tN3-0 N4-1",  # cold user
        "3\tU3\t11/15/2019 7:11:50 PM\tN1\tN97-1 N96-0",  # nothing resolvable
    ]
    folder = write_split(tmp_path / "s", behaviors=rows)
    beh = read_behaviors(folder / "behaviors.tsv", {f"N{i}": i for i in range(1, 5)})
    assert beh.report.dropped == {"unresolved history ids": 1, "unresolved impression ids": 3,
                                  "impressions with no resolvable candidate": 1}
    assert list(beh.history) == [1, 2]
    assert list(np.diff(beh.history_offsets)) == [2, 0]
    assert list(beh.candidates) == [3, 4, 3, 4] and list(beh.labels) == [1, 0, 0, 1]


def test_layouts_root_official_explicit_and_zip(tmp_path):
    write_split(tmp_path / "a" / "train")
    write_split(tmp_path / "a" / "dev")
    layout = resolve_layout(tmp_path / "a")
    assert layout.train.name == "train" and layout.dev.name == "dev"

    write_split(tmp_path / "b" / "MINDsmall_train")
    write_split(tmp_path / "b" / "MINDsmall_dev")
    layout = resolve_layout(tmp_path / "b")
    assert layout.train.name == "MINDsmall_train" and layout.dev.name == "MINDsmall_dev"

    layout = resolve_layout(train=tmp_path / "a" / "train", dev=tmp_path / "b" / "MINDsmall_dev")
    assert layout.dev.name == "MINDsmall_dev"

    (tmp_path / "c").mkdir()
    for split in ("train", "dev"):
        with zipfile.ZipFile(tmp_path / "c" / f"MINDdemo_{split}.zip", "w") as archive:
            archive.write(tmp_path / "a" / split / "news.tsv", "news.tsv")
            archive.write(tmp_path / "a" / split / "behaviors.tsv", "behaviors.tsv")
    layout = resolve_layout(tmp_path / "c")
    corpus = load_corpus(layout, title_len=8)
    assert corpus.train.num_impressions == 1 and corpus.dev.news.ids[1] == "N1"
    assert (tmp_path / "c" / "MINDdemo_train.zip").exists()  # the user's zip is left alone


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        resolve_layout(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MIND data"):
        resolve_layout(tmp_path / "empty")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip"):
        resolve_layout(tmp_path / "bad.zip")
    assert (tmp_path / "bad.zip").exists()


def test_vocab_from_train_only_with_min_count_and_cache_skips_tokenising(tmp_path, monkeypatch):
    write_split(tmp_path / "train")
    write_split(tmp_path / "dev", news=NEWS + ["N5\tnews\tnewsworld\tUnseen dev words\tabs\turl\t[]\t[]"])
    corpus = load_corpus(resolve_layout(tmp_path), title_len=6, min_count=2)
    assert set(corpus.vocab.words) == {"<pad>", "<unk>", "the"}  # only 'the' occurs twice in train titles
    dev_row = corpus.dev.news.index["N5"]
    assert list(corpus.dev.news.tokens[dev_row]) == [1, 1, 1, 0, 0, 0]  # unknown words map to UNK, pad to 0
    assert corpus.dev.news.tokens.dtype == np.int32 and corpus.dev.news.tokens.shape == (6, 6)

    def fail(*args, **kwargs):
        raise AssertionError("re-tokenised although the cache is warm")

    monkeypatch.setattr(text_module, "tokenize", fail)
    monkeypatch.setattr(Vocab, "encode_many", fail)
    again = load_corpus(resolve_layout(tmp_path), title_len=6, min_count=2)
    assert np.array_equal(again.dev.news.tokens, corpus.dev.news.tokens)
    assert again.train.reports[1].kept == 1
    # A changed file is a new cache key.
    monkeypatch.undo()
    (tmp_path / "dev" / "behaviors.tsv").write_text(GOOD_BEHAVIOR + "\n" + GOOD_BEHAVIOR.replace("1\tU1", "2\tU2"))
    assert load_corpus(resolve_layout(tmp_path), title_len=6, min_count=2).dev.num_impressions == 2


def test_glove_loader_reports_coverage_and_randomises_the_rest(tmp_path):
    vocab = Vocab.build(["alpha beta gamma", "beta"])
    path = tmp_path / "glove.txt"
    path.write_text("beta 1 2 3\nzeta 0 0 0\nalpha 4 5 6\n", encoding="utf-8")
    result = load_glove(path, vocab, dim=3)
    assert result.found == 2 and result.coverage(vocab) == pytest.approx(2 / 3)
    assert list(result.vectors[vocab.index["alpha"]]) == [4, 5, 6]
    assert np.all(result.vectors[0] == 0) and np.any(result.vectors[vocab.index["gamma"]] != 0)
    path.write_text("beta 1 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"glove.txt:1: field 'vector' has 2 values, expected 3"):
        load_glove(path, vocab, dim=3)


def test_training_batches_sample_k_negatives_from_the_same_impression(demo_corpus):
    corpus = load_corpus(resolve_layout(demo_corpus), title_len=16)
    split = corpus.train
    batches = TrainBatches(split, batch_size=32, negatives=4, history_len=50, seed=3)
    batch = batches[0]
    assert batch.candidates.shape == (32, 5) and batch.history.shape == (32, 50)
    order = batches._order()[:32]
    for i in range(32):
        imp = batches.sample_impression[order[i]]
        cands, labels = split.candidates_of(imp)
        negatives = set(cands[labels == 0].tolist())
        picked = batch.news_rows.numpy()[batch.candidates[i].numpy()]
        assert picked[0] in set(cands[labels == 1].tolist())
        assert set(picked[1:].tolist()) <= negatives
        if len(negatives) >= 4:
            assert len(set(picked[1:].tolist())) == 4  # without replacement
    assert np.array_equal(batch.titles.numpy(), split.news.tokens[batch.news_rows.numpy()])
    again = TrainBatches(split, batch_size=32, negatives=4, history_len=50, seed=3)[0]
    assert all(np.array_equal(getattr(batch, k), getattr(again, k)) for k in ("titles", "candidates", "history"))
    history, mask = gather_histories(split, np.arange(split.num_impressions), 50)
    lengths = np.minimum(np.diff(split.behaviors.history_offsets), 50)
    assert np.array_equal(mask.sum(1), lengths) and np.all(history[~mask] == 0)
    longest = int(np.argmax(np.diff(split.behaviors.history_offsets)))
    assert np.array_equal(history[longest][mask[longest]], split.history_of(longest)[-50:])  # latest clicks


def test_mind_sample_parses_and_reports(mind_sample):
    corpus = load_corpus(resolve_layout(mind_sample), title_len=30)
    train_beh = corpus.train.reports[1]
    assert train_beh.kept > 0 and train_beh.dropped["unresolved history ids"] > 0
    assert corpus.dev.num_impressions > 0
    assert "unresolved impression ids" in corpus.train.read_report()


def test_a_users_impressions_are_in_time_order_and_the_history_is_the_latest(tmp_path):
    rows = [
        "1\tU2\t11/15/2019 9:00:00 AM\tN1 N2\tN3-1 N4-0",
        "2\tU1\t11/15/2019 8:00:00 AM\tN1\tN3-0 N4-1",
        "3\tU2\t11/15/2019 7:00:00 AM\tN1\tN3-1 N4-0",  # U2's oldest impression comes last in the file
    ]
    root = tmp_path / "root"
    write_split(root / "train", behaviors=rows)
    split = load_corpus(resolve_layout(root), title_len=8, splits=("train",), cache=False).train
    assert list(split.user_impressions("U2")) == [2, 0]
    assert list(split.user_history("U2")) == [1, 2]  # rows of N1 N2, as of 9:00
    assert list(split.user_impressions("U1")) == [1]
    with pytest.raises(DataError, match="unknown user id 'U3'"):
        split.user_impressions("U3")


def test_vocabulary_files_that_are_not_ours_name_the_file(tmp_path):
    from nram_core.data.entities import EntityVocab
    from nram_core.data.split import CategoryVocab

    bad = tmp_path / "bad.json"
    for text, why in (("[1, 2]", "list indices"), ('{"words": "<pad>"}', "field 'words' is not a list"),
                      ("{", "Expecting")):
        bad.write_text(text)
        with pytest.raises(DataError, match=f"bad.json: not a vocabulary file .*{why}"):
            Vocab.load(bad)
    bad.write_text('{"entities": 3}')
    with pytest.raises(DataError, match="not an entity vocabulary"):
        EntityVocab.load(bad)
    bad.write_text('{"categories": ["<unk>"]}')
    with pytest.raises(DataError, match="not a category vocabulary .*subcategories"):
        CategoryVocab.load(bad)
