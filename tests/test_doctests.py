import doctest

import pytest

from nram_core import fileio, metrics
from nram_core.data import batching, mind, text


@pytest.mark.parametrize("module", [metrics, mind, text, fileio, batching], ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
