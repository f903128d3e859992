"""The helper every threaded test uses: a worker's exception fails the test that started it."""

import os
import threading

import pytest

from workers import WorkerFailed, Workers

pytest_plugins = ["pytester"]


def test_a_raising_worker_fails_the_join():
    workers = Workers()
    workers.start(lambda: None)
    workers.start(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        workers.join()


def test_every_worker_runs_and_a_clean_join_passes(workers):
    seen = []
    lock = threading.Lock()

    def add(i):
        with lock:
            seen.append(i)

    workers.map(add, 8)
    assert sorted(seen) == list(range(8))


def test_a_worker_still_running_fails_the_join():
    release = threading.Event()
    workers = Workers()
    workers.start(release.wait)
    with pytest.raises(WorkerFailed):
        workers.join(timeout=0.05)  # the worker waits on an event only the test sets: never timing-dependent
    release.set()
    workers.join()


def test_a_test_that_never_joins_still_fails_through_the_fixture(pytester):
    pytester.makeconftest("from workers import workers  # the suite's own fixture\n")
    pytester.makepyfile("""
def test_forgets_to_join(workers):
    workers.start(lambda: [][1])
""")
    here = os.path.dirname(os.path.dirname(__file__))  # tests/, where workers.py lives
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rootdir={pytester.path}",
                                           "-o", f"pythonpath={here}")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*IndexError*"])
