import doctest

import pytest

from bench import evaluate as bench_evaluate
from nram_core import (attention_stats, callbacks, config, cpu_wait, fastpath, fileio, memory, metrics, news_map,
                       recommend, run_info, scoring, user_quality, vocab_fit)
from nram_core.data import batching, mind, split, stats, text, users
from studio import charts, tables, training, widgets  # the app's helpers (tests/conftest.py puts app/ on the path)


@pytest.mark.parametrize("module", [metrics, mind, split, stats, text, users, fileio, batching, config, fastpath,
                                    memory, scoring, news_map, vocab_fit, recommend, run_info, bench_evaluate, charts,
                                    tables, widgets, training, user_quality, attention_stats, callbacks,
                                    cpu_wait],
                         ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
