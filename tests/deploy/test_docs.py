"""The documents a user clones: everything they point to is in the repository."""

import re
from contextlib import contextmanager
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


def write_user_files(folder: Path) -> None:
    """What the user docs' examples take, made here with OpenCV: an RGBA logo with transparent corners
    (logo.png) and a full mask (mask.png); a clip where the logo moves 8 px a frame right from (20, 50)
    (clip.mp4, 10 fps, 8 frames) and a folder of its frames; an MJPG copy of it for ffmpeg to serve
    live (live.avi); a photo with the logo at (200, 100) (photo.jpg); a part and a tray with three
    turned copies of it (part.png, tray.png)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    logo = cv2.GaussianBlur(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (0, 0), 1.0)
    alpha = np.zeros((40, 40), np.uint8)
    cv2.circle(alpha, (20, 20), 19, 255, -1)
    cv2.imwrite(str(folder / "logo.png"), np.dstack([logo, alpha]))
    cv2.imwrite(str(folder / "mask.png"), np.full((40, 40), 255, np.uint8))
    background = cv2.GaussianBlur(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8), (0, 0), 2.0)
    clip = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (240, 160))
    live = cv2.VideoWriter(str(folder / "live.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (240, 160))
    (folder / "frames").mkdir()
    inside = alpha > 0
    for t in range(8):
        frame = background.copy()
        frame[50:90, 20 + 8 * t:60 + 8 * t][inside] = logo[inside]
        clip.write(frame)
        for _ in range(4):
            live.write(frame)
        cv2.imwrite(str(folder / "frames" / f"{t:03d}.png"), frame)
    clip.release()
    live.release()
    photo = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 2.0)
    photo[100:140, 200:240][inside] = logo[inside]
    cv2.imwrite(str(folder / "photo.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    part = cv2.GaussianBlur(rng.integers(0, 256, (28, 44, 3), dtype=np.uint8), (0, 0), 1.0)
    cv2.imwrite(str(folder / "part.png"), part)
    tray = cv2.GaussianBlur(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8), (0, 0), 2.0)
    for (x, y), angle in (((60, 50), 0.0), ((150, 60), 30.0), ((100, 115), -75.0)):
        turn = cv2.getRotationMatrix2D((22, 14), angle, 1.0)
        turn[:, 2] += (x - 22, y - 14)
        cv2.warpAffine(part, turn, (240, 160), tray, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    cv2.imwrite(str(folder / "tray.png"), tray)


def user_env(port: int) -> dict[str, str]:
    import os
    import sys

    return dict(os.environ, FEATUREMAP_ADDRESS=f"localhost:{port}",
                PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))


def test_every_command_of_the_your_own_video_guide_runs_and_runs_again(tmp_path):
    """docs/your-own-video.md, command by command, twice (the bank kept in between: a second add of an
    id must not fail), in a folder with a logo and a clip made here."""
    import json
    import os

    from service_helpers import free_port

    write_user_files(tmp_path)
    for _ in range(2):
        port = free_port()
        run_walkthrough("your-own-video.md", tmp_path, user_env(port), {"localhost:50051": f"localhost:{port}"}, port,
                        timeout=300)
    entries = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(8))
    for entry in entries:
        (peak,) = entry["peaks"]
        assert entry["source"] == "clip.mp4" and peak["template"] == "templates/logo"
        assert abs(peak["x"] - (20 + 8 * entry["sequence"])) <= 1 and abs(peak["y"] - 50) <= 1
        assert (peak["cx"], peak["cy"]) == (peak["x"] + 19.5, peak["y"] + 19.5)  # the centre, as documented
    for name, sources in (("folder.jsonl", [os.path.join("frames", f"{t:03d}.png") for t in range(8)]),
                          ("glob.jsonl", [f"frames/{t:03d}.png" for t in range(8)])):
        assert [json.loads(line)["source"] for line in (tmp_path / name).read_text().splitlines()] == sources
    for name in ("camera.jsonl", "stream.jsonl"):  # the live stream named as given, frame by frame
        lines = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        frames = [e for e in lines if "sequence" in e]
        assert frames and all(e["source"].startswith("http://127.0.0.1:") for e in frames)
        assert all(p["template"] == "templates/logo" for e in frames for p in e["peaks"])
    assert (tmp_path / "overlay.mp4").stat().st_size > 0 and (tmp_path / "folder.mp4").stat().st_size > 0


def test_every_example_of_the_client_guide_and_the_readme_runs(tmp_path):
    """docs/client.md's commands (but the demo, run by tests/client/test_cli.py) and Python, and the
    README's client sections' twice, against a server of their own; the Python's RTSP stream is the clip."""
    import json

    from service_helpers import free_port, start_process, wait_serving_at

    write_user_files(tmp_path)
    port = free_port()
    server = start_process(tmp_path / "data", port)
    try:
        wait_serving_at(f"127.0.0.1:{port}")
        addresses = {"localhost:50051": f"localhost:{port}"}
        swaps = {**addresses, "rtsp://camera/stream": "clip.mp4"}
        guide = run_walkthrough("client.md", tmp_path, user_env(port), addresses, port, timeout=300,
                                skip=("featuremap demo",))
        run_python("client.md", tmp_path, user_env(port), swaps)
        # The README's client sections (the others build, test and deploy the project), twice: a reader
        # runs its examples again (one failed with ALREADY_EXISTS the second time). The client guide's
        # run once, to keep make test's time.
        for _ in range(2):
            run_walkthrough("../README.md", tmp_path, user_env(port), addresses, port, timeout=300,
                            section="On your own video or camera")
            run_python("../README.md", tmp_path, user_env(port), swaps, section="In Python")
    finally:
        server.terminate()
        server.wait(60)
        server.stdout.close()
        server.stderr.close()
    answers = dict(guide)  # the second run's
    (peak, *_) = json.loads(answers[next(c for c in answers if c.startswith("featuremap match photo.jpg"))])["peaks"]
    assert (peak["template"], peak["x"], peak["y"]) == ("templates/logo", 200.0, 100.0)
    found = json.loads(answers[next(c for c in answers if c.startswith("featuremap match tray.png"))])["peaks"]
    assert len(found) >= 3 and all(p["template"] == "templates/part" for p in found)
    live = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    assert any("sequence" in e for e in live)


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


def doc_text(doc: str, section: str | None = None) -> str:
    """docs/``doc``, or its ``## section`` alone (up to the next section)."""
    text = (ROOT / "docs" / doc).read_text()
    if section is None:
        return text
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def run_walkthrough(doc: str, folder: Path, env: dict[str, str], addresses: dict[str, str], grpc_port: int,
                    timeout: float, skip: tuple[str, ...] = (), section: str | None = None) -> list[tuple[str, str]]:
    """Run every line of ``doc``'s sh blocks in ``folder``, ``addresses`` swapped for the test's; a line
    ending in & is the server, started in the background and waited on until it serves, stopped at
    the end; a camera (``watch 0``) or an RTSP URL is a live HTTP stream of live.avi that ffmpeg serves
    for that line. Lines starting with one of ``skip`` are left out. A line that fails fails the test;
    returns each other line (as written, comments dropped) with its output."""
    import shlex
    import subprocess

    import grpc

    from service_helpers import wait_serving

    text = doc_text(doc, section)
    commands = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.strip() and not line.startswith(skip)]
    server, outputs = None, []
    try:
        for written in commands:
            command = written
            for theirs, ours in addresses.items():
                command = command.replace(theirs, ours)
            if command.endswith("&"):
                server = subprocess.Popen(shlex.split(command[:-1]), cwd=folder, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                channel = grpc.insecure_channel(f"localhost:{grpc_port}")
                wait_serving(channel)
                channel.close()
                continue
            with live_stream(folder, command) as command:
                done = subprocess.run(command, shell=True, cwd=folder, env=env, capture_output=True, text=True,
                                      timeout=timeout)
            assert done.returncode == 0, (command, done.stderr[-2000:])
            outputs.append((written.split("  #")[0].strip(), done.stdout))
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
    return outputs


LIVE = re.compile(r"(?<=watch )(0(?= )|rtsp://\S+)")


@contextmanager
def live_stream(folder: Path, command: str):
    """``command`` with its camera index or RTSP URL (if any) swapped for a live HTTP MJPEG stream of
    folder/live.avi, looped, that ffmpeg serves (to one client) until the command is done."""
    import shutil
    import subprocess
    import time

    import pytest

    from service_helpers import free_port

    if not LIVE.search(command):
        yield command
        return
    if shutil.which("ffmpeg") is None:
        pytest.skip("the docs' camera and RTSP examples need ffmpeg (apt-get install ffmpeg); CI installs it")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    ffmpeg = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                               str(folder / "live.avi"), "-c:v", "copy", "-f", "mpjpeg", "-listen", "1", url],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):  # read from /proc: a probe would take ffmpeg's one client
            assert time.monotonic() < deadline and ffmpeg.poll() is None, "ffmpeg did not start listening"
            time.sleep(0.02)
        yield LIVE.sub(url, command)
    finally:
        ffmpeg.kill()
        ffmpeg.wait()


def listening(port: int) -> bool:
    """Whether something listens on the loopback port (from /proc/net/tcp*)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(int(row.split()[1].rsplit(":", 1)[1], 16) == port and row.split()[3] == "0A" for row in rows):
            return True
    return False


def run_python(doc: str, folder: Path, env: dict[str, str], swaps: dict[str, str], section: str | None = None) -> None:
    """Run each python block of ``doc`` in ``folder``, as a script of its own, ``swaps`` made; a block that
    goes on from an earlier one (``client.create_template(...)``) has an open ``client`` given."""
    import subprocess
    import sys

    text = doc_text(doc, section)
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, doc
    for block in blocks:
        for theirs, ours in swaps.items():
            block = block.replace(theirs, ours)
        given = ("from featuremap.client import FeatureMapClient\n"
                 f"client = FeatureMapClient({swaps['localhost:50051']!r}, timeout=60)\n")
        done = subprocess.run([sys.executable, "-c", given + block], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (doc, block, done.stderr[-2000:])


def test_the_api_reference_is_made_from_the_docstrings_as_they_are():
    """docs/api.md is what docs/api_reference.py writes from the public names' signatures and docstrings."""
    import subprocess
    import sys

    checked = subprocess.run([sys.executable, str(ROOT / "docs" / "api_reference.py"), "--check"],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
