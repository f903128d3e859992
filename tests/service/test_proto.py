"""The committed stubs are what `make proto` generates from the committed proto."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("featuremap_pb2.py", "featuremap_pb2_grpc.py", "featuremap_pb2.pyi")


def test_stubs_are_fresh(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "-Iproto", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", "featuremap/v1/featuremap.proto"],
        check=True, cwd=ROOT,
    )
    for name in GENERATED:
        fresh = (tmp_path / "featuremap" / "v1" / name).read_text()
        committed = (ROOT / "featuremap" / "v1" / name).read_text()
        assert committed == fresh, f"{name} is stale: run `make proto` and commit the result"
