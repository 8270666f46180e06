"""Inputs of the fault suite, made once per session (see ``faultkit.Inputs``).

``tests/`` is on ``sys.path`` (its own conftest puts it there), so the suite
imports ``stack``, ``servers`` and ``test_service`` like every other test.
"""

from __future__ import annotations

import pytest
from faultkit import Inputs, write_random_tree

from transformers.generate import generate


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("fault-inputs")
    generate(root / "small.root", 2000, seed=3, basket_entries=1000)
    write_random_tree(root / "big.root", 1_500_000)
    return Inputs(root)
