"""The layers contract holds on the package, and `make lint` would fail on a module that breaks it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is a development extra")


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", str(ROOT / "pyproject.toml")], cwd=tree, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("where, source, broken", [
    # The frame path climbing back to the server edge.
    ("service/pipeline/planted.py", "from ..edge import metrics\n",
     "The service's layers: edge over frame path over bank over errors over engine"),
    # The bank importing gRPC.
    ("service/store/planted.py", "import grpc\n", "Nothing below the server edge imports the RPC library"),
    # A new module in the engine reaching for the frame path: covered without naming it anywhere.
    ("service/engine/planted.py", "from ..pipeline import codec\n",
     "The service's layers: edge over frame path over bank over errors over engine"),
])
def test_a_planted_violation_breaks_the_contract(tmp_path, where, source, broken):
    shutil.copytree(ROOT / "featuremap", tmp_path / "featuremap",
                    ignore=shutil.ignore_patterns("__pycache__", "*.jpg", "static"))
    clean = lint(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    (tmp_path / "featuremap" / where).write_text(source)
    planted = lint(tmp_path)
    assert planted.returncode != 0
    assert f"{broken} BROKEN" in " ".join(planted.stdout.split()), planted.stdout
