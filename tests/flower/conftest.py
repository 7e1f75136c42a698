"""The Flower transport's tests need the ``flower`` extra: skipped with a reason without it,
a failure where ``FEDOVERSIGHT_REQUIRE_FLOWER=1`` (the CI step that installs the extra)."""

from __future__ import annotations

import importlib.util
import os

import pytest

REQUIRED = os.environ.get("FEDOVERSIGHT_REQUIRE_FLOWER") == "1"
MISSING = importlib.util.find_spec("flwr") is None
REASON = 'Flower is not installed: pip install -e ".[flower,test]" (a venv of its own, see .ci/run)'


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not MISSING:
        return
    ours = [i for i in items if "tests/flower/" in str(i.path).replace(os.sep, "/")]
    if ours and REQUIRED:
        raise pytest.UsageError(REASON)
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=REASON))
