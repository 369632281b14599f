"""Fixtures shared by test modules."""
import pytest

from http_server import running_server


@pytest.fixture
def server():
    """A local HTTP server for one test (tests/http_server.py): fill ``server.routes``, fetch ``server.base``."""
    yield from running_server()
