"""Tests of the service's signal semantics with pyinit's pytest plugin (docs/testing.md).

    pytest examples/testing                               # service.py: both pass
    SERVICE=service_buggy.py pytest examples/testing      # both fail, naming the fault

The `sandbox` fixture comes from pyinit's plugin, registered when pyinit is
installed; from a clone, add `-p pyinit.pytest_plugin`. Each test starts the
service under pyinit as PID 1 of a fresh PID namespace, as a container would;
whatever happens, every process it started is gone when the test ends. Each
sandbox has a network of its own (network="private"), so the tests can run in
parallel (`pytest -n auto`) though every service binds the same port.
"""

import os
import sys
import urllib.request
from pathlib import Path

import pytest

from pyinit.testing import assert_no_leftovers, assert_stops_on

SERVICE = Path(__file__).with_name(os.environ.get("SERVICE", "service.py"))
PORT = 8080  # the same in every test: each sandbox has a network of its own, so `pytest -n auto` is safe


@pytest.fixture
def service(sandbox):
    """The service, started in a network of its own and answering."""
    box = sandbox([sys.executable, str(SERVICE), str(PORT)], network="private")
    assert box.wait_for_http(PORT, "/health").body == b"hello\n"  # asked inside the sandbox's network
    with urllib.request.urlopen(box.url(PORT, "/")) as response:  # url(): reaches it from here
        assert response.read() == b"hello\n"
    return box


def test_stops_on_sigterm_with_exit_code_0(service):
    """`docker stop`: SIGTERM to PID 1, and the service must exit 0 within 5 seconds."""
    assert_stops_on(service, "TERM", within=5, exit_code=0)


def test_leaves_no_process_behind(service):
    """When the service has exited, nothing it started may still be running."""
    service.stop("TERM", timeout=5)
    assert_no_leftovers(service)
