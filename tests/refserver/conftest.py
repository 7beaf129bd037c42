"""Every reference-server test runs against each request path (native and Python), except the
ones marked ``native_only``, which drive the native binary itself and are deselected (not
skipped: CI fails a skip) on the Python path."""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "native_only: runs on the native request path alone")


def pytest_collection_modifyitems(config, items):
    drop = [
        item
        for item in items
        if item.get_closest_marker("native_only")
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("refserver_impl") == "python"
    ]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if item not in drop]


@pytest.fixture(autouse=True)
def _each_request_path(refserver_impl):
    return refserver_impl
