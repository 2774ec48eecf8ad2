import doctest

import pytest

from nram_core import config, fileio, metrics
from nram_core.data import batching, mind, text
from studio import cache, charts  # the app's helpers (tests/conftest.py puts app/ on the path)


@pytest.mark.parametrize("module", [metrics, mind, text, fileio, batching, config, charts, cache],
                         ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
