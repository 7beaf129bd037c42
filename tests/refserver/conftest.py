"""Every reference-server test runs against each request path (native and Python)."""

import pytest


@pytest.fixture(autouse=True)
def _each_request_path(refserver_impl):
    return refserver_impl
