"""The x86-64 level a server's kernels compile for, chosen before Numba loads; seeding that never fails a start."""

import os
import platform
import subprocess
import sys

import pytest

from featuremap.service.edge import cpu_level
from featuremap.service.edge.command import seed_kernel_cache

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


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 levels")
@pytest.mark.parametrize("level,lanes", [("x86-64-v2", 8), ("x86-64-v3", 8), ("x86-64-v4", 16)])
def test_the_tiles_take_the_width_of_the_level_they_compile_for(level, lanes):
    # A level's name with an empty feature list: LLVM knows what the name implies.
    env = dict(os.environ, NUMBA_CPU_NAME=level, NUMBA_CPU_FEATURES="")
    done = subprocess.run([sys.executable, "-c", "from featuremap.service.engine.lanes import LANES; print(LANES)"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == lanes


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make folders another user cannot change")
@pytest.mark.parametrize("writable", [True, False])
def test_seeding_as_a_non_root_user_into_a_root_owned_folder(writable):
    # As in a pod: the image's user (not root) seeds a volume root owns, group-writable with
    # fsGroup (copying the folder's own mode onto it failed: a crash loop), or read-only.
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="featuremap-seed-")
    try:
        os.chmod(root, 0o755)
        seed = os.path.join(root, "seed", "engine")
        os.makedirs(seed)
        for name in ("kernels.nbi", "kernels.0.nbc"):
            with open(os.path.join(seed, name), "w") as f:
                f.write(name)
        os.chmod(os.path.join(root, "seed"), 0o755)
        target = os.path.join(root, "cache")
        os.mkdir(target)
        group = 54321  # the pod's fsGroup
        os.chown(target, 0, group)
        os.chmod(target, 0o2775 if writable else 0o755)
        script = (
            "import os\n"
            "from featuremap.service.edge import cpu_level  # imported before: the venv may live where nobody reads\n"
            "from featuremap.service.edge.command import seed_kernel_cache\n"
            f"os.setgroups([{group}]); os.setgid(65534); os.setuid(65534)\n"
            "print(seed_kernel_cache())\n")
        env = dict(os.environ, FEATUREMAP_KERNEL_CACHE_SEED=os.path.join(root, "seed"), NUMBA_CACHE_DIR=target)
        env.pop("NUMBA_CPU_NAME", None)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr  # the start goes on either way
        copied = os.path.join(target, "engine", "kernels.nbi")
        if writable:
            assert open(copied).read() == "kernels.nbi" and done.stderr == ""
        else:
            assert not os.path.exists(copied)
            assert done.stderr.count("\n") == 1 and "could not copy 2 of 2 warm kernels" in done.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_users_own_level_is_seeded_when_the_image_carries_it(tmp_path, monkeypatch):
    (tmp_path / "x86-64-v2").mkdir()
    monkeypatch.setenv("NUMBA_CPU_NAME", "x86-64-v2")
    assert cpu_level.apply(tmp_path) == "x86-64-v2"
