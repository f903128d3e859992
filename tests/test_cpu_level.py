"""The x86-64 level a server's kernels compile for, chosen before Numba loads; seeding that never fails a start."""

import os
import subprocess
import sys

import pytest

from featuremap.service import cpu_level
from featuremap.service.command import seed_kernel_cache

V2 = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3", "sse2"}
V3 = V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
V4 = V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


@pytest.mark.parametrize("flags,levels", [
    (V4, ["x86-64-v4", "x86-64-v3", "x86-64-v2"]),
    (V3, ["x86-64-v3", "x86-64-v2"]),
    (V2, ["x86-64-v2"]),
    ({"sse2", "ssse3"}, []),  # an older CPU: no level, its own kernels
    (V4 - {"bmi2"}, ["x86-64-v2"]),  # AVX-512 without a v3 feature is not v4 either
])
def test_a_cpu_runs_the_levels_whose_flags_it_has_and_every_level_below(flags, levels):
    assert cpu_level.supported_levels(frozenset(flags)) == levels


def test_the_flags_come_from_proc_cpuinfo():
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: none\n"
    assert cpu_level.cpu_flags(text) == {"fpu", "sse2", "avx2", "avx512f"}


def test_the_best_level_the_image_carries_is_chosen(tmp_path):
    (tmp_path / "x86-64-v2").mkdir()
    (tmp_path / "x86-64-v3").mkdir()
    assert cpu_level.choose(tmp_path, frozenset(V4)) == "x86-64-v3"  # v4 not carried: the best below
    assert cpu_level.choose(tmp_path, frozenset(V2)) == "x86-64-v2"
    assert cpu_level.choose(tmp_path, frozenset({"sse2"})) is None
    assert cpu_level.choose(None, frozenset(V4)) is None


def test_seeding_chooses_a_level_copies_its_kernels_and_never_fails_the_start(tmp_path, monkeypatch, capsys):
    seed = tmp_path / "seed"
    for level in ("x86-64-v2", "x86-64-v3"):
        (seed / level / "engine").mkdir(parents=True)
        (seed / level / "engine" / "kernel.nbi").write_text(level)
    for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        # setenv first: monkeypatch then restores the variable as it was (absent), whatever
        # seed_kernel_cache writes into os.environ (a later compile would read it).
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    monkeypatch.setattr(cpu_level, "cpu_flags", lambda cpuinfo=None: frozenset(V3))
    monkeypatch.setenv("FEATUREMAP_KERNEL_CACHE_SEED", str(seed))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    assert seed_kernel_cache() == "x86-64-v3"
    assert os.environ["NUMBA_CPU_NAME"] == "x86-64-v3" and os.environ["NUMBA_CPU_FEATURES"] == ""
    assert (tmp_path / "cache" / "engine" / "kernel.nbi").read_text() == "x86-64-v3"
    # A cache folder that cannot be written (here: under a file; in a pod, a volume owned by
    # another user): one line says so, and the start goes on (the kernels then compile).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.delenv("NUMBA_CPU_NAME")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "cache"))
    assert seed_kernel_cache() == "x86-64-v3"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not copy 1 of 1 warm kernels" in err and "compile at start" in err


def test_a_users_own_cpu_name_wins(tmp_path, monkeypatch):
    (tmp_path / "x86-64-v3").mkdir()
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    assert cpu_level.apply(tmp_path) is None
    assert os.environ["NUMBA_CPU_NAME"] == "haswell"


@pytest.mark.parametrize("level,lanes", [("x86-64-v2", 8), ("x86-64-v3", 8), ("x86-64-v4", 16)])
def test_the_tiles_take_the_width_of_the_level_they_compile_for(level, lanes):
    # A level's name with an empty feature list: LLVM knows what the name implies.
    env = dict(os.environ, NUMBA_CPU_NAME=level, NUMBA_CPU_FEATURES="")
    done = subprocess.run([sys.executable, "-c", "from featuremap.service.engine.lanes import LANES; print(LANES)"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == lanes
