import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def pytest_collection_modifyitems(items):
    """Tests that wait on the subprocess end-to-end runs of test_cli.py are slow."""
    for item in items:
        if "e2e" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
