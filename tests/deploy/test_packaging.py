"""The distribution installs only namespaced packages (featuremap.*)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import featuremap
import featuremap.service.engine

ROOT = Path(__file__).resolve().parents[2]


def _copy(tmp_path: Path) -> Path:
    """The project's sources copied (setuptools writes build/ and egg-info beside them)."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.nbi", "*.nbc")
    for part in ("featuremap", "proto"):
        shutil.copytree(ROOT / part, source / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    return source


def test_an_editable_install_prints_no_notice(tmp_path):
    # make test installs the project editable: setuptools' finder for a flat layout printed
    # "Editable installation. Please be careful with folders ..." on every install.
    source = _copy(tmp_path)
    script = (f"from setuptools import build_meta; print(build_meta.build_editable({str(tmp_path)!r}))")
    built = subprocess.run([sys.executable, "-c", script], cwd=source, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    assert "Editable installation" not in output and "package-dir" not in output, output
    assert list(tmp_path.glob("featuremap-*.whl"))


def test_wheel_holds_only_the_featuremap_namespace(tmp_path):
    source = _copy(tmp_path)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        check=True, cwd=tmp_path, capture_output=True, text=True,
    )
    # A user's `pip install .` builds this wheel: it prints no warning (the old package-dir mapping did).
    assert "warning" not in (built.stdout + built.stderr).lower(), built.stdout + built.stderr
    (wheel,) = tmp_path.glob("featuremap-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"featuremap", f"featuremap-{featuremap.__version__}.dist-info"}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"featuremap/service/engine/matcher.py", "featuremap/client/demo.py", "featuremap/v1/__init__.py",
            "featuremap/service/gateway/app.py", "featuremap/service/gateway/static/index.html",
            "featuremap/service/gateway/static/app.js", "featuremap/v1/featuremap.proto"} <= names
    assert not any(name.startswith("google/") for name in names)  # the vendored google/api protos stay out


def test_the_source_is_laid_out_by_import_name():
    assert Path(featuremap.service.engine.__file__).parent == ROOT / "featuremap" / "service" / "engine"
    assert Path(featuremap.__file__).parent == ROOT / "featuremap"
