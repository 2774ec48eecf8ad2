"""User ids through the data pipeline: UserVocab, align_users, Split.model_users, Batch.users."""
import dataclasses
import doctest
import json

import numpy as np
import pytest
import torch

from nram_core.data import resolve_layout
from nram_core.data.batching import Batch, TrainBatches, gather_histories, make_batch
from nram_core.data.split import (Corpus, align_users, carve_validation, load_corpus, take_impressions,
                                  with_train_users)
from nram_core.data.users import UserVocab
from nram_core.fileio import DataError


@pytest.fixture(scope="module")
def corpus(demo_corpus):
    return load_corpus(resolve_layout(demo_corpus), title_len=12)


def expected_codes(split, vocab: UserVocab) -> list[int]:
    """The plain-Python mapping that ``UserVocab.codes`` vectorises."""
    index = {user: i for i, user in enumerate(vocab.ids) if i}
    return [index.get(split.user_ids[int(code)], 0) for code in split.users]


def test_docstring_examples_hold():
    from nram_core.data import users

    result = doctest.testmod(users)
    assert result.attempted > 0 and result.failed == 0


def test_vocabulary_holds_the_users_of_the_splits_impressions(corpus):
    train = corpus.train
    vocab = UserVocab.from_split(train)
    assert vocab.ids[0] == ""
    assert list(vocab.ids[1:]) == sorted({train.user_ids[int(c)] for c in train.users})
    assert len(vocab) == len(vocab.ids)
    # A carved part shares train's user_ids list but only its own impressions' users enter the vocabulary.
    fit, validation = carve_validation(train, 0.3)
    fit_vocab = UserVocab.from_split(fit)
    assert set(fit_vocab.ids[1:]) == {fit.user_ids[int(c)] for c in fit.users}
    only_validation = {validation.user_ids[int(c)] for c in validation.users} - set(fit_vocab.ids)
    assert only_validation  # the demo corpus has users seen only late in train
    assert all(fit_vocab.code(user) == 0 for user in only_validation)


def test_codes_map_train_and_dev_users_to_the_train_ids(corpus):
    vocab = UserVocab.from_split(corpus.train)
    train_codes, dev_codes = vocab.codes(corpus.train), vocab.codes(corpus.dev)
    assert train_codes.dtype == np.int64 and train_codes.shape == (corpus.train.num_impressions,)
    assert train_codes.tolist() == expected_codes(corpus.train, vocab)
    assert (train_codes > 0).all()  # every train user is known to a vocabulary of train
    assert dev_codes.tolist() == expected_codes(corpus.dev, vocab)
    dev_users = [corpus.dev.user_ids[int(c)] for c in corpus.dev.users]
    absent = [i for i, user in enumerate(dev_users) if user not in set(vocab.ids)]
    present = [i for i, user in enumerate(dev_users) if user in set(vocab.ids)]
    assert absent and present  # both kinds occur, so both checks below test something
    assert (dev_codes[absent] == 0).all()
    assert all(vocab.ids[dev_codes[i]] == dev_users[i] for i in present)
    assert all(vocab.code(dev_users[i]) == dev_codes[i] for i in absent + present)


def test_codes_of_hostile_ids_are_exact():
    """Object comparisons, not fixed-width strings: a trailing NUL or a long id is its own user."""
    from types import SimpleNamespace

    vocab = UserVocab(("", "U1", "U1\x00", "U" * 5000))
    split = SimpleNamespace(user_ids=["U1\x00", "U" * 4999, "U" * 5000, "U1", "V"],
                            users=np.array([0, 1, 2, 3, 4, 0], np.int32))
    assert vocab.codes(split).tolist() == [2, 0, 3, 1, 0, 2]
    assert vocab.code("") == 0 and vocab.code("U1\x00") == 2
    empty = SimpleNamespace(user_ids=[], users=np.zeros(0, np.int32))
    assert vocab.codes(empty).tolist() == [] and vocab.codes(empty).dtype == np.int64
    assert UserVocab(("",)).codes(split).tolist() == [0] * 6


def test_save_load_round_trip(corpus, tmp_path):
    vocab = UserVocab.from_split(corpus.train)
    vocab.save(tmp_path / "users.json")
    assert json.loads((tmp_path / "users.json").read_text()) == {"users": list(vocab.ids)}
    again = UserVocab.load(tmp_path / "users.json")
    assert again == vocab
    assert again.codes(corpus.dev).tolist() == vocab.codes(corpus.dev).tolist()
    assert list((tmp_path).iterdir()) == [tmp_path / "users.json"]  # atomic: no temp file left


@pytest.mark.parametrize("text, why", [
    ('["", "U1"]', "not a user vocabulary"),
    ('{"users": "U1"}', "field 'users' is not a list"),
    ('{"words": [""]}', "not a user vocabulary .*users"),
    ("{", "not a user vocabulary"),
    ('{"users": ["", 1, 2]}', "2 entries are not user ids, e.g. 1"),
    ('{"users": ["", "U1", null]}', "not user ids, e.g. None"),
    ('{"users": ["", "U1", ""]}', "not user ids, e.g. ''"),
    ('{"users": ["", "U1", "U1"]}', "'U1' is listed more than once"),
    ('{"users": ["", "U2", "U1"]}', r"not sorted \('U2' before 'U1'\)"),
    ('{"users": ["U1", "U2"]}', "first id must be ''"),
    ('{"users": []}', "first id must be ''"),
    ('{"users": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper"),
    ('{"users": ["", ' + "[" * 100 + "]" * 100 + "]}", "nested deeper"),
    ('{"users": ["", ["U1"]]}', r"not user ids, e.g. \['U1'\]"),
])
def test_hostile_users_json_is_one_line_naming_the_file(tmp_path, text, why):
    bad = tmp_path / "users.json"
    bad.write_text(text)
    with pytest.raises(DataError, match=why) as caught:
        UserVocab.load(bad)
    message = str(caught.value)
    assert str(bad) in message and "\n" not in message and len(message) < 400


def test_a_hostile_id_is_shown_short(tmp_path):
    bad = tmp_path / "users.json"
    bad.write_text(json.dumps({"users": ["", "B" * 10_000, "A\nB"]}))
    with pytest.raises(DataError, match="not sorted") as caught:
        UserVocab.load(bad)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_a_vocabulary_checks_its_ids_when_made():
    with pytest.raises(ValueError, match="not sorted"):
        UserVocab(("", "b", "a"))
    with pytest.raises(ValueError, match="first id"):
        UserVocab(("a",))


def test_align_users_and_with_train_users(corpus):
    vocab = UserVocab.from_split(corpus.train)
    dev = align_users(corpus.dev, vocab)
    assert dev.model_users.tolist() == expected_codes(corpus.dev, vocab)
    assert corpus.dev.model_users is None  # a copy: the loaded split is untouched
    assert dev.users is corpus.dev.users and dev.news is corpus.dev.news

    aligned, got = with_train_users(corpus)
    assert got == vocab and aligned.vocab is corpus.vocab and aligned.validation is None
    assert aligned.train.model_users.tolist() == expected_codes(corpus.train, vocab)
    assert aligned.dev.model_users.tolist() == dev.model_users.tolist()

    fit, validation = carve_validation(corpus.train, 0.3)
    carved, fit_vocab = with_train_users(dataclasses.replace(corpus, train=fit, validation=validation))
    assert fit_vocab == UserVocab.from_split(fit)
    assert carved.validation.model_users.tolist() == expected_codes(validation, fit_vocab)
    assert (carved.validation.model_users == 0).any()  # users seen only in validation are unknown
    with pytest.raises(DataError, match="needs a train split"):
        with_train_users(Corpus(vocab=corpus.vocab, train=None, dev=corpus.dev))


def test_model_users_stay_out_of_the_split_cache(demo_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("NRAM_HOME", str(tmp_path / "home"))
    first = load_corpus(resolve_layout(demo_corpus), title_len=12, splits=("train",))
    aligned, _ = with_train_users(first)
    entry = next((tmp_path / "home" / "prepared").glob("*/meta.json")).parent
    assert not any("model_users" in p.name for p in entry.iterdir())
    again = load_corpus(resolve_layout(demo_corpus), title_len=12, splits=("train",)).train
    assert again.model_users is None
    assert np.array_equal(again.users, first.train.users) and aligned.train.model_users is not None


def test_take_impressions_keeps_model_users(corpus):
    train, _ = with_train_users(corpus)
    rows = np.array([5, 0, 3, 3])
    part = take_impressions(train.train, rows, name="part")
    assert part.model_users.tolist() == train.train.model_users[rows].tolist()
    assert take_impressions(corpus.train, rows, name="part").model_users is None
    fit, validation = carve_validation(train.train, 0.25)
    assert sorted(fit.model_users.tolist() + validation.model_users.tolist()) == sorted(
        train.train.model_users.tolist())


def old_batch(batches: TrainBatches, index: int) -> tuple[Batch, np.ndarray]:
    """Batch ``index`` built the way TrainBatches built it before user ids existed."""
    order = batches._order()
    chosen = order[index * batches.batch_size: (index + 1) * batches.batch_size]
    impressions = batches.sample_impression[chosen]
    rng = np.random.default_rng([batches.seed, batches.epoch, index, 1])
    negatives = batches._sample_negatives(impressions, rng)
    clicks = batches.split.behaviors.candidates[batches.sample_candidate[chosen]].astype(np.int64)
    candidates = np.concatenate([clicks[:, None], negatives], axis=1)
    history, mask = gather_histories(batches.split, impressions, batches.history_len)
    return make_batch(batches.split, history, mask, candidates), impressions


def assert_same_tensors(a: Batch, b: Batch, *, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(Batch):
        if f.name in skip:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None), f.name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), f.name


def test_train_batches_carry_users_only_when_the_split_has_them(corpus):
    aligned, vocab = with_train_users(corpus)
    plain = TrainBatches(corpus.train, batch_size=37, negatives=4, history_len=20, seed=3)
    with_users = TrainBatches(aligned.train, batch_size=37, negatives=4, history_len=20, seed=3)
    for batches in (plain, with_users):
        batches.set_epoch(1)
    for index in (0, 1, len(plain) - 1):
        before, impressions = old_batch(plain, index)
        got = plain[index]
        assert got.users is None
        assert_same_tensors(got, before)  # NRAM's batches are bit-for-bit those of before
        users = with_users[index]
        assert_same_tensors(users, before, skip=("users",))  # the same samples, negatives and news
        assert users.users.dtype == torch.int64 and users.users.shape == (len(before),)
        assert users.users.tolist() == [vocab.code(corpus.train.user_ids[int(corpus.train.users[i])])
                                        for i in impressions]


def test_select_shard_to_and_pin_keep_users(corpus):
    aligned, _ = with_train_users(corpus)
    batches = TrainBatches(aligned.train, batch_size=37, negatives=4, history_len=20)
    batch = batches[0]
    assert torch.equal(batch.select(5, 9).users, batch.users[5:9])
    parts = [batch.shard(rank, 3) for rank in range(3)]
    assert torch.equal(torch.cat([p.batch.users[: p.rows] for p in parts]), batch.users)
    stand_in = batch.select(0, 2).shard(2, 3)
    assert stand_in.rows == 0 and stand_in.batch.users.tolist() == batch.users[:1].tolist()
    assert torch.equal(batch.to("cpu").users, batch.users)
    assert torch.equal(batch.shard(0, 1).batch.users, batch.users)
    assert torch.equal(batch.trim().users, batch.users)
    plain = TrainBatches(corpus.train, batch_size=37, negatives=4, history_len=20)[0]
    assert plain.select(5, 9).users is None and plain.shard(1, 3).batch.users is None
    assert plain.to("cpu").users is None
    if torch.cuda.is_available():  # pinning needs an accelerator
        assert torch.equal(batch.pin_memory().users, batch.users) and plain.pin_memory().users is None


def test_make_batch_takes_one_user_per_sample(corpus):
    split = corpus.dev
    impressions = np.arange(4)
    history, mask = gather_histories(split, impressions, 10)
    candidates = split.behaviors.candidates[split.behaviors.candidate_offsets[impressions]][:, None].astype(np.int64)
    batch = make_batch(split, history, mask, candidates, np.array([3, 0, 1, 2], np.int32))
    assert batch.users.dtype == torch.int64 and batch.users.tolist() == [3, 0, 1, 2]
    assert make_batch(split, history, mask, candidates).users is None
    with pytest.raises(ValueError, match="one id per sample"):
        make_batch(split, history, mask, candidates, np.array([1, 2]))
