"""The documents a user clones: everything they point to is in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_document_points_outside_the_repository():
    assert ROOT / "docs" / "DESIGN.md" in DOCUMENTS  # the project's own design document
    for path in DOCUMENTS:
        text = path.read_text()
        assert "shared/DESIGN.md" not in text and "](../" not in text, path
        for target in re.findall(r"\]\(([^)#]+)\)", text):  # markdown links: to files that exist here
            if "://" not in target:
                resolved = (path.parent / target).resolve()
                assert resolved.is_relative_to(ROOT) and resolved.exists(), (path.name, target)


def test_every_command_of_the_your_own_video_guide_runs(tmp_path):
    """docs/your-own-video.md, command by command, in a folder with a logo and a clip made here."""
    import json
    import os
    import sys

    import cv2
    import numpy as np

    from service_helpers import free_port

    # A logo with transparent corners, and a clip (and a folder of its frames) where it moves.
    rng = np.random.default_rng(7)
    logo = cv2.GaussianBlur(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (0, 0), 1.0)
    alpha = np.zeros((40, 40), np.uint8)
    cv2.circle(alpha, (20, 20), 19, 255, -1)
    cv2.imwrite(str(tmp_path / "logo.png"), np.dstack([logo, alpha]))
    background = cv2.GaussianBlur(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8), (0, 0), 2.0)
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (240, 160))
    (tmp_path / "frames").mkdir()
    inside = alpha > 0
    for t in range(8):
        frame = background.copy()
        frame[50:90, 20 + 8 * t:60 + 8 * t][inside] = logo[inside]
        writer.write(frame)
        cv2.imwrite(str(tmp_path / "frames" / f"{t:03d}.png"), frame)
    writer.release()

    port = free_port()
    env = dict(os.environ, FEATUREMAP_ADDRESS=f"localhost:{port}",
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    run_walkthrough("your-own-video.md", tmp_path, env, {"localhost:50051": f"localhost:{port}"}, port, timeout=300)
    entries = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(8))
    for entry in entries:
        (peak,) = entry["peaks"]
        assert entry["source"] == "clip.mp4" and peak["template"] == "templates/logo"
        assert abs(peak["x"] - (20 + 8 * entry["sequence"])) <= 1 and abs(peak["y"] - 50) <= 1
    folder = [json.loads(line)["source"] for line in (tmp_path / "folder.jsonl").read_text().splitlines()]
    assert folder == [os.path.join("frames", f"{t:03d}.png") for t in range(8)]
    assert (tmp_path / "overlay.mp4").stat().st_size > 0 and (tmp_path / "folder.mp4").stat().st_size > 0


def test_every_command_of_the_http_walkthrough_runs(tmp_path):
    """docs/http.md's curl commands, against a server started as the page says, in a folder with a
    photo and a logo cut from it; the answers are JSON and the logo is found where it was cut."""
    import json
    import os
    import shutil
    import sys

    import cv2
    import pytest

    from service_helpers import free_port

    if shutil.which("curl") is None:
        pytest.skip("the walk-through's commands need curl")
    from featuremap.client.demo import PHOTO  # the demo's photograph

    photo = cv2.resize(cv2.imread(str(PHOTO)), (320, 240))
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(tmp_path / "logo.png"), photo[96:144, 180:244])
    grpc_port, http_port = free_port(), free_port()
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    outputs = run_walkthrough("http.md", tmp_path, env, {"localhost:50051": f"localhost:{grpc_port}",
                                                         "localhost:8080": f"localhost:{http_port}"},
                              grpc_port, timeout=120)
    answers = [(command, json.loads(out)) for command, out in outputs if out]
    for command, answer in answers:
        assert "code" not in answer, (command, answer)  # no error
        if "frames:match" in command:
            best = answer["result"]["peaks"][0]
            assert (best["template"], best["x"], best["y"]) == ("templates/logo", 180.0, 96.0), (command, best)
    assert json.loads((tmp_path / "openapi.json").read_text())["paths"]


def run_walkthrough(doc: str, folder: Path, env: dict[str, str], addresses: dict[str, str], grpc_port: int,
                    timeout: float) -> list[tuple[str, str]]:
    """Run every line of ``doc``'s sh blocks in ``folder``, ``addresses`` swapped for the test's; a line
    ending in & is the server, started in the background and waited on until it serves, stopped at
    the end. A line that fails fails the test; returns each other line with its output."""
    import shlex
    import subprocess

    import grpc

    from service_helpers import wait_serving

    text = (ROOT / "docs" / doc).read_text()
    commands = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.strip()]
    server, outputs = None, []
    try:
        for command in commands:
            for theirs, ours in addresses.items():
                command = command.replace(theirs, ours)
            if command.endswith("&"):
                server = subprocess.Popen(shlex.split(command[:-1]), cwd=folder, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                channel = grpc.insecure_channel(f"localhost:{grpc_port}")
                wait_serving(channel)
                channel.close()
                continue
            done = subprocess.run(command, shell=True, cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            assert done.returncode == 0, (command, done.stderr[-2000:])
            outputs.append((command, done.stdout))
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
    return outputs


def test_the_api_reference_is_made_from_the_docstrings_as_they_are():
    """docs/api.md is what docs/api_reference.py writes from the public names' signatures and docstrings."""
    import subprocess
    import sys

    checked = subprocess.run([sys.executable, str(ROOT / "docs" / "api_reference.py"), "--check"],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
