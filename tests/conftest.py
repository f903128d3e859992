"""Shared fixtures: real servers on real ports (in-process or as their own process), real gRPC.

A module tunes its server by overriding ``server_settings`` (function-scoped
``server``) or ``module_server_settings`` (``module_server``, one server for
the whole module).
"""

from __future__ import annotations

import os

import pytest

from featuremap.client import FeatureMapClient

from service_helpers import free_port, running_server, start_process, wait_serving_at
from simulated import SIMULATOR, gpu_dev
from workers import workers  # noqa: F401  (the fixture: threads whose exceptions fail the test)


@pytest.fixture
def server_settings() -> dict:
    """Settings of ``server`` beyond the defaults (override in a module)."""
    return {}


@pytest.fixture
def server(tmp_path, server_settings):
    """An in-process server with its own bank: (stub, channel, Server)."""
    with running_server(tmp_path / "data", **server_settings) as running:
        yield running


@pytest.fixture(scope="module")
def module_server_settings() -> dict:
    """Settings of ``module_server`` beyond the defaults (override in a module)."""
    return {}


@pytest.fixture(scope="module")
def module_server(tmp_path_factory, module_server_settings):
    """One in-process server for a whole module: (stub, channel, Server)."""
    with running_server(tmp_path_factory.mktemp("data"), **module_server_settings) as running:
        yield running


@pytest.fixture
def client(server):
    """A FeatureMapClient of ``server``, and the Server."""
    _, _, running = server
    with FeatureMapClient(f"127.0.0.1:{running.port}", timeout=30) as c:
        yield c, running


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """``featuremap-server serve`` as its own process, for a whole module; yields its address."""
    port = free_port()
    process = start_process(tmp_path_factory.mktemp("data"), port)
    wait_serving_at(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(60)
    process.stdout.close()
    process.stderr.close()


# The CUDA simulator's tests run in their own process (tests/simulated.py),
# where NUMBA_ENABLE_CUDASIM=1 is set before Numba loads.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cuda_sim"]


def pytest_collection_modifyitems(session, config, items):
    """Start the simulator's suite as soon as the session is known to want it: it runs beside the rest."""
    if gpu_dev() and any(item.name == "test_the_cuda_kernels_match_the_cpu_engine_under_the_simulator"
                         for item in items):
        SIMULATOR.start()


def pytest_sessionfinish(session, exitstatus):
    SIMULATOR.stop()
