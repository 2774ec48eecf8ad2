import doctest

import pytest

from bench import evaluate as bench_evaluate
from nram_core import config, fastpath, fileio, metrics, news_map, recommend, run_info, scoring, vocab_fit
from nram_core.data import batching, mind, stats, text
from studio import charts, tables, widgets  # the app's helpers (tests/conftest.py puts app/ on the path)


@pytest.mark.parametrize("module", [metrics, mind, stats, text, fileio, batching, config, fastpath, scoring,
                                    news_map, vocab_fit, recommend, run_info, bench_evaluate, charts, tables,
                                    widgets],
                         ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
