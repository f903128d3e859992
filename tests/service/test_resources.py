"""CPUs and memory as a container grants them, read from cgroup files (v2 and v1 layouts)."""

import os
import threading

import pytest

from featuremap.service.errors import LimitExceeded
from featuremap.service.pipeline.budget import MemoryBudget
from featuremap.service.edge.cgroup import available_cpus, cgroup_cpus, cgroup_memory, default_memory_budget, machine_memory


def cgroup(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize("files,cpus,memory", [
    ({"cpu.max": "400000 100000", "memory.max": "2147483648"}, 4.0, 2 << 30),  # v2, limited
    ({"cpu.max": "150000 100000", "memory.max": "max"}, 1.5, None),  # v2, 1.5 CPUs, no memory limit
    ({"cpu.max": "max 100000", "memory.max": "max"}, None, None),  # v2, unlimited
    ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000",
      "memory/memory.limit_in_bytes": "1073741824"}, 2.0, 1 << 30),  # v1, limited
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
      "memory/memory.limit_in_bytes": "9223372036854771712"}, None, None),  # v1, unlimited
    ({}, None, None),  # no cgroup files at all
])
def test_limits_are_read_from_the_cgroup(tmp_path, files, cpus, memory):
    root = cgroup(tmp_path, files)
    assert cgroup_cpus(root) == cpus
    assert cgroup_memory(root) == memory
    usable = len(os.sched_getaffinity(0))
    assert available_cpus(root) == (min(usable, int(-(-cpus // 1))) if cpus else usable)
    assert default_memory_budget(root) == (memory or machine_memory()) // 2


def test_a_quota_of_a_fraction_of_a_cpu_still_gets_one(tmp_path):
    assert available_cpus(cgroup(tmp_path, {"cpu.max": "50000 100000"})) == 1


def test_the_budget_refuses_what_cannot_fit_and_queues_what_cannot_fit_yet(workers):
    budget = MemoryBudget(100)
    with pytest.raises(LimitExceeded, match=r"\(memory_budget\)"):
        with budget.hold(101):
            pass
    order = []
    waiting = threading.Event()

    def still_wanted():
        waiting.set()  # asked only while it waits for room: the second hold is queued
        return False

    with budget.hold(60):
        def second():
            with budget.hold(60, cancelled=still_wanted):
                order.append("second")

        workers.start(second)
        assert waiting.wait(30)
        order.append("first done")
    workers.join()
    assert order == ["first done", "second"] and budget.used == 0
    with budget.hold(90):
        with pytest.raises(LimitExceeded, match="stayed full"):
            with budget.hold(20, cancelled=lambda: True):
                pass
    assert budget.used == 0
