"""Coverage-guided fuzzing of image decoding with atheris, where it installs."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris has no wheel for this platform")

HARNESS = Path(__file__).with_name("fuzz_codec.py")


def fuzz(runs: int, tmp_path) -> None:
    result = subprocess.run([sys.executable, str(HARNESS), f"-runs={runs}", "-seed=1", "-max_len=4096",
                             f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {runs} runs" in result.stderr


def test_fuzz_image_decoding(tmp_path):
    fuzz(5000, tmp_path)


@pytest.mark.soak
def test_fuzz_image_decoding_soak(tmp_path):
    fuzz(500000, tmp_path)
