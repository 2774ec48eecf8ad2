import doctest

import pytest

from bench import evaluate as bench_evaluate
from nram_core import config, fileio, metrics, model, scoring
from nram_core.data import batching, mind, text
from studio import cache, charts  # the app's helpers (tests/conftest.py puts app/ on the path)


@pytest.mark.parametrize("module", [metrics, mind, text, fileio, batching, config, model, scoring,
                                    bench_evaluate, charts, cache],
                         ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
