"""Tests of the service's signal semantics with pyinit's pytest plugin (README: "Testing a service").

    pytest examples/testing                               # service.py: both pass
    SERVICE=service_buggy.py pytest examples/testing      # both fail, naming the fault

The `sandbox` fixture comes from pyinit's plugin, registered when pyinit is
installed; from a clone, add `-p pyinit.pytest_plugin`. Each test starts the
service under pyinit as PID 1 of a fresh PID namespace, as a container would;
whatever happens, every process it started is gone when the test ends.
"""

import os
import socket
import sys
from pathlib import Path

import pytest

from pyinit.testing import assert_no_leftovers, assert_stops_on

SERVICE = Path(__file__).with_name(os.environ.get("SERVICE", "service.py"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def service(sandbox):
    """The service, started and accepting connections."""
    port = free_port()
    box = sandbox([sys.executable, str(SERVICE), str(port)])
    box.wait_for_port(port)
    with socket.create_connection(("127.0.0.1", port)) as connection:
        assert connection.recv(16) == b"hello\n"
    return box


def test_stops_on_sigterm_with_exit_code_0(service):
    """`docker stop`: SIGTERM to PID 1, and the service must exit 0 within 5 seconds."""
    assert_stops_on(service, "TERM", within=5, exit_code=0)


def test_leaves_no_process_behind(service):
    """When the service has exited, nothing it started may still be running."""
    service.stop("TERM", timeout=5)
    assert_no_leftovers(service)
