"""Beyond-accuracy figures (nram_core/beyond.py, `python -m nram_core beyond`): each formula on hand-computed
lists, the lists a split gives (one per dev user, the top of an impression's candidates), and the command:
deterministic, finite, the trained demo model more personal than popularity, one-line refusals."""
import doctest
import json
import math
import shutil

import numpy as np
import pytest

from nram_core import beyond
from test_faithfulness import SHIPPED, refused, run_cli  # the command's helpers, shared with that file


def test_docstring_examples_hold():
    result = doctest.testmod(beyond)
    assert result.attempted > 0 and result.failed == 0


# ---- each formula on hand lists --------------------------------------------------------------------
LISTS = np.array([[1, 2, 3], [1, 2, 4], [5, 6, 1]])  # three users' top-3 lists of news rows 1..8


def test_coverage_and_counts():
    catalog = np.arange(1, 9)
    assert beyond.coverage(LISTS, catalog) == 6 / 8  # 1..6 recommended, 7 and 8 never
    assert beyond.recommendation_counts(LISTS, catalog).tolist() == [3, 2, 1, 1, 1, 1, 0, 0]
    assert beyond.coverage(LISTS, np.array([1, 2])) == 1.0


def test_gini():
    # counts sorted [0,0,1,1,1,1,2,3], n = 8, total 9; the weights 2i - n - 1 are -7,-5,...,7:
    # -7*0 - 5*0 - 3*1 - 1*1 + 1*1 + 3*1 + 5*2 + 7*3 = 31, over n * total = 72
    assert beyond.gini(np.array([3, 2, 1, 1, 1, 1, 0, 0])) == pytest.approx(31 / 72)
    assert beyond.gini(np.array([2, 2])) == 0.0
    assert beyond.gini(np.array([0, 0, 7])) == pytest.approx(2 / 3)  # (n-1)/n: one news takes everything
    assert math.isnan(beyond.gini(np.array([0, 0])))


def test_intra_list_diversity():
    vectors = np.zeros((9, 2))
    vectors[1:] = [[1, 0], [1, 0], [0, 1], [-1, 0], [1, 1], [0, 3], [1, 0], [1, 0]]
    # list 1 (1,2,3): distances 0, 1, 1 -> 2/3; list 2 (1,2,4): 0, 2, 2 -> 4/3;
    # list 3 (5,6,1): 1 - 1/sqrt2, 1 - 1/sqrt2, 1 -> (3 - sqrt2) / 3
    expected = (2 / 3 + 4 / 3 + (3 - math.sqrt(2)) / 3) / 3
    assert beyond.intra_list_diversity(LISTS, vectors) == pytest.approx(expected)
    assert beyond.intra_list_diversity(np.array([[7, 8]]), vectors) == pytest.approx(0.0)
    assert math.isnan(beyond.intra_list_diversity(np.array([[1], [2]]), vectors))


def test_category_entropy():
    category = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])  # row -> category
    # list 1: cats 0,0,1 -> H(2/3,1/3) = 0.9183; list 2: 0,0,1 the same; list 3: 2,2,0 the same
    h = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    assert beyond.category_entropy(LISTS, category) == pytest.approx(h)
    assert beyond.category_entropy(np.array([[1, 3, 5, 7]]), category) == pytest.approx(2.0)  # four categories


def test_calibration_kl():
    category = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
    histories = [np.array([1, 3]), np.array([5, 5]), np.array([], dtype=np.int64)]
    lists = np.array([[1, 2, 3], [5, 6, 7], [1, 2, 3]])
    # user 1: p = (1/2, 1/2, 0, 0), q = (2/3, 1/3, 0, 0), a = 0.01: q~ = 0.99 q + 0.01 p
    q1 = np.array([0.99 * 2 / 3 + 0.005, 0.99 / 3 + 0.005])
    kl1 = 0.5 * math.log(0.5 / q1[0]) + 0.5 * math.log(0.5 / q1[1])
    # user 2: p = (0, 0, 1, 0), q = (0, 0, 2/3, 1/3): q~(2) = 0.99 * 2/3 + 0.01
    kl2 = math.log(1 / (0.99 * 2 / 3 + 0.01))
    assert beyond.calibration_kl(histories, lists, category) == pytest.approx((kl1 + kl2) / 2)  # user 3: no history
    # a list that misses a history category entirely stays finite through the smoothing: log(1 / a)
    assert beyond.calibration_kl([np.array([7])], np.array([[1, 2]]), category) == pytest.approx(math.log(100))
    assert math.isnan(beyond.calibration_kl([np.array([], dtype=np.int64)], np.array([[1, 2]]), category))


def test_novelty():
    clicks = np.array([0, 9, 4, 0, 0, 0, 0, 0, 0])  # row 1 clicked in 9 of 9 train impressions, row 2 in 4
    lists = np.array([[1, 2], [3, 2]])
    # p = (9+1)/10 = 1 -> 0 bits; (4+1)/10 -> 1 bit; (0+1)/10 -> log2(10) bits
    assert beyond.novelty(lists, clicks, 9) == pytest.approx((0 + 1 + math.log2(10) + 1) / 4)


def test_personalisation():
    # Jaccard: (1,2): |{1,2}| / |{1,2,3,4}| = 1/2; (1,3): 1/5; (2,3): 1/5
    assert beyond.personalisation(LISTS) == pytest.approx(1 - (0.5 + 0.2 + 0.2) / 3)
    assert beyond.personalisation(np.array([[1, 2], [2, 1], [1, 2]])) == 0.0
    assert beyond.personalisation(np.array([[1, 2], [3, 4], [5, 6]])) == 1.0
    assert math.isnan(beyond.personalisation(np.array([[1, 2]])))
    many = np.random.default_rng(0).permuted(np.tile(np.arange(1, 30), (300, 1)), axis=1)[:, :5]
    # the chunked product against the pairwise sets
    sets = [set(row) for row in many.tolist()]
    jac = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    assert beyond.personalisation(many) == pytest.approx(1 - np.mean(jac))


# ---- the lists of the demo split -------------------------------------------------------------------
@pytest.fixture(scope="module")
def splits(demo_corpus):
    from nram_core.checkpoint import load_run

    run = load_run(SHIPPED)
    return (run, run.load_split("dev", demo_corpus / "dev", cache=False),
            run.load_split("train", demo_corpus / "train", cache=False))


def test_one_list_per_user_from_their_latest_impression_with_a_choice(splits):
    _, dev, _ = splits
    chosen = beyond.list_impressions(dev, 10)
    sizes = np.diff(dev.behaviors.candidate_offsets)
    users = dev.users[chosen]
    assert len(chosen) and len(np.unique(users)) == len(chosen) and np.all(sizes[chosen] > 10)
    for impression in chosen[:50]:
        mine = np.flatnonzero((dev.users == dev.users[impression]) & (sizes > 10))
        assert dev.behaviors.times[impression] == dev.behaviors.times[mine].max()
    # every user with an impression of more than 10 candidates gets a list
    assert len(chosen) == len(np.unique(dev.users[sizes > 10]))


def test_top_lists_are_the_best_scored_candidates_with_the_tie_rule(splits):
    _, dev, _ = splits
    offsets = dev.behaviors.candidate_offsets - dev.behaviors.candidate_offsets[0]
    scores = np.random.default_rng(0).integers(0, 3, int(offsets[-1])).astype(np.float32)  # many ties
    chosen = beyond.list_impressions(dev, 5)[:40]
    lists = beyond.top_lists(scores, offsets, dev, chosen, 5)
    for impression, top in zip(chosen, lists):
        lo, hi = offsets[impression], offsets[impression + 1]
        order = np.argsort(-scores[lo:hi], kind="stable")  # equal scores: the earlier candidate first
        assert top.tolist() == dev.behaviors.candidates[lo:hi][order[:5]].tolist()


def test_beyond_accuracy_of_popularity_without_vectors(splits):
    from nram_core.baselines import Popularity

    _, dev, train = splits
    figures = beyond.beyond_accuracy(Popularity(train), dev, train, top=10)
    assert figures["intra_list_diversity"] is None  # popularity has no news vectors of its own
    assert all(math.isfinite(figures[name]) for name in beyond.FIGURES if name != "intra_list_diversity")
    assert figures["lists"] > 0 and figures["catalog"] >= 10 and figures["top"] == 10
    assert 0 < figures["coverage"] <= 1 and 0 <= figures["gini"] < 1 and 0 <= figures["personalisation"] <= 1
    # the lists of popularity: within each impression, the news most clicked in train come first
    clicks = beyond.train_clicks(train, dev)
    chosen = beyond.list_impressions(dev, 10)
    scores, _, offsets = Popularity(train).score_split(dev)
    lists = beyond.top_lists(scores, offsets, dev, chosen, 10)
    for impression, top in zip(chosen[:30], lists):
        candidates, _ = dev.candidates_of(int(impression))
        assert clicks[top].min() >= np.sort(clicks[candidates])[::-1][9]


# ---- the command -----------------------------------------------------------------------------------
@pytest.mark.slow  # two full runs of the command over the demo dev split
def test_cli_twice_the_same_finite_line_and_the_model_more_personal_than_popularity(demo_corpus, capsys):
    lines = []
    for _ in range(2):
        code, out, err = run_cli(capsys, "beyond", "--run", SHIPPED, "--data", demo_corpus, "--top", 10)
        assert code == 0, err
        lines.append(out)
    assert lines[0] == lines[1] and lines[0].count("\n") == 1
    record = json.loads(lines[0])
    for figures in (record, record["popularity"]):
        assert all(isinstance(figures[name], float) and math.isfinite(figures[name]) for name in beyond.FIGURES)
        assert figures["lists"] == record["lists"] and figures["catalog"] == record["catalog"]
    assert record["personalisation"] > record["popularity"]["personalisation"]
    assert record["gini"] < record["popularity"]["gini"]


def test_cli_refuses_in_one_line(demo_corpus, tmp_path, capsys):
    assert refused(*run_cli(capsys, "beyond", "--run", tmp_path / "missing", "--data", demo_corpus))
    code, out, err = run_cli(capsys, "beyond", "--run", SHIPPED, "--data", demo_corpus / "dev")
    assert refused(code, out, err) and "train" in err
    code, out, err = run_cli(capsys, "beyond", "--run", SHIPPED, "--data", demo_corpus, "--top", 100000)
    assert refused(code, out, err) and "--top" in err
    assert refused(*run_cli(capsys, "beyond", "--run", SHIPPED, "--data", demo_corpus, "--top", 0))
    only_dev = tmp_path / "only_dev"
    shutil.copytree(demo_corpus / "dev", only_dev / "dev")
    assert refused(*run_cli(capsys, "beyond", "--run", SHIPPED, "--data", only_dev))
