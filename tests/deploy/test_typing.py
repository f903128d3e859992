"""The client's types hold: mypy --strict accepts a correct script and rejects planted mistakes.

mypy reads the package as users get it: installed from a wheel into a folder
(an editable install hides it from mypy behind an import hook).
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PLANTED = '''
import numpy as np
from featuremap.client import FeatureMapClient

frame = np.zeros((48, 64), np.uint8)
with FeatureMapClient("localhost:50051", timeout=5) as client:
    client.create_template(frame[:8, :8], template_id=5)
    result = client.match(frame, topk=3)
    result = client.match(frame, method="ncc")
    result = client.match(frame, stride="2")
    for p in result.peaks:
        print(p.scor)
    for r in client.stream([frame], windw=2):
        print(r.maps["templates/a"].origin_z)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(build),
                    str(ROOT)], check=True, capture_output=True, cwd=build)
    (wheel,) = build.glob("featuremap-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    return target


def mypy(site, script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(site.parent / "mypy-cache"), str(script)],
                          env={"MYPYPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)


def test_mypy_rejects_misspelled_options_wrong_types_and_misspelled_attributes(site, tmp_path):
    script = tmp_path / "planted.py"
    script.write_text(PLANTED)
    checked = mypy(site, script)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    errors = {int(line.split(":")[1]) for line in checked.stdout.splitlines() if ": error:" in line}
    lines = PLANTED.splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    planted = ["template_id=5", "topk=3", 'method="ncc"', 'stride="2"', "p.scor", "windw=2", "origin_z"]
    assert {line_of(text) for text in planted} <= errors, checked.stdout


def test_mypy_accepts_the_example_script(site):
    checked = mypy(site, ROOT / "examples" / "find_logo.py")
    assert checked.returncode == 0, checked.stdout + checked.stderr
