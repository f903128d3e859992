"""Every CLI command as a subprocess against a real server process."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from service_helpers import featuremap_command as run
from service_helpers import free_port


@pytest.fixture(scope="module")
def server(server_process):
    return server_process


def moving_video(path, frames=24, step=2):
    """A textured scene with one 24x24 patch moving right by ``step`` pixels a frame."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (120, 200, 3), dtype=np.uint8), (0, 0), 2)
    patch = np.kron(rng.integers(0, 2, (6, 6, 1), dtype=np.uint8) * 255, np.ones((4, 4, 3), np.uint8))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (200, 120))
    for t in range(frames):
        frame = background.copy()
        frame[40:64, 10 + step * t:34 + step * t] = patch
        writer.write(frame)
    writer.release()
    return [(10 + step * t, 40) for t in range(frames)]


def test_templates_commands(server, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "t.png"), image)
    added = run("templates", "add", str(tmp_path / "t.png"), "--id", "cli-t", "--name", "T", "--label", "k=v",
                address=server)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["name"] == "templates/cli-t"
    listed = run("templates", "list", address=server)
    assert "templates/cli-t" in [json.loads(line)["name"] for line in listed.stdout.splitlines()]
    got = run("templates", "get", "cli-t", "--out", str(tmp_path / "back.png"), address=server)
    assert got.returncode == 0 and np.array_equal(cv2.imread(str(tmp_path / "back.png")), image)
    assert run("templates", "rm", "cli-t", address=server).returncode == 0
    missing = run("templates", "get", "cli-t", address=server)
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr


def test_templates_add_from_video_and_match(server, tmp_path):
    video = tmp_path / "v.avi"
    truth = moving_video(video)
    x, y = truth[5]
    added = run("templates", "add", "--from-video", str(video), "--frame", "5", "--roi", f"{x},{y},24,24",
                "--id", "cli-mover", address=server)
    assert added.returncode == 0, added.stderr
    cap = cv2.VideoCapture(str(video))
    for _ in range(9):
        ok, frame = cap.read()
    cv2.imwrite(str(tmp_path / "f8.png"), frame)
    matched = run("match", str(tmp_path / "f8.png"), "--template", "cli-mover", "--heatmap", str(tmp_path / "h.png"),
                  "--overlay", str(tmp_path / "o.png"), address=server)
    assert matched.returncode == 0, matched.stderr
    (peak,) = json.loads(matched.stdout)["peaks"]
    assert abs(peak["x"] - truth[8][0]) <= 2 and abs(peak["y"] - truth[8][1]) <= 2
    heat = cv2.imread(str(tmp_path / "h.png"))  # the frame, and the legend's panel at its right
    assert heat.shape[0] == frame.shape[0] and heat.shape[1] > frame.shape[1]
    assert cv2.imread(str(tmp_path / "o.png")).shape == frame.shape


def test_watch_follows_a_moving_template(server, tmp_path):
    video = tmp_path / "v.avi"
    truth = moving_video(video, frames=30)
    x, y = truth[0]
    assert run("templates", "add", "--from-video", str(video), "--frame", "0", "--roi", f"{x},{y},24,24",
               "--id", "cli-watched", address=server).returncode == 0
    out, heat, lines = tmp_path / "o.mp4", tmp_path / "h.mp4", tmp_path / "d.jsonl"
    watched = run("watch", str(video), "--template", "cli-watched", "--out", str(out), "--heatmap-out", str(heat),
                  "--jsonl", str(lines), address=server)
    assert watched.returncode == 0, watched.stderr
    entries = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(30))
    for entry in entries:
        (peak,) = entry["peaks"]
        tx, ty = truth[entry["sequence"]]
        assert abs(peak["x"] - tx) <= 2 and abs(peak["y"] - ty) <= 2, entry
        assert set(entry) == {"source", "sequence", "timestamp", "peaks", "skipped"}
        assert entry["source"] == str(video)
        assert peak["track"] == 1  # one object, followed all along: one track
    for video_out in (out, heat):
        assert int(cv2.VideoCapture(str(video_out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    limited = run("watch", str(video), "--template", "cli-watched", "--max-frames", "5", "--jsonl", str(lines),
                  address=server)
    assert limited.returncode == 0 and len(lines.read_text().splitlines()) == 5
    # A folder of images: each line names its file.
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(video))
    for i in range(4):
        ok, frame = capture.read()
        cv2.imwrite(str(folder / f"f{i:02d}.png"), frame)
    capture.release()
    from_folder = run("watch", str(folder), "--template", "cli-watched", "--jsonl", str(lines), "--out", str(out),
                      "--fps", "7.5", address=server)
    assert from_folder.returncode == 0, from_folder.stderr
    named = [json.loads(line)["source"] for line in lines.read_text().splitlines()]
    assert named == [str(folder / f"f{i:02d}.png") for i in range(4)]
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(7.5, abs=0.01)  # --fps kept
    assert run("watch", str(folder), "--fps", "0", address=server).returncode == 1


def test_bad_sources_and_usage(server, tmp_path):
    missing = run("watch", str(tmp_path / "nope.mp4"), address=server)
    assert missing.returncode == 2 and "nope.mp4" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    broken = run("watch", str(tmp_path / "broken.mp4"), address=server)
    assert broken.returncode == 2 and "broken.mp4" in broken.stderr
    assert run("match", str(tmp_path / "nope.png"), address=server).returncode == 2
    usage = run("templates", "add", "--from-video", "x.mp4", "--roi", "1,2,3", address=server)
    assert usage.returncode == 1 and "Traceback" not in usage.stderr
    assert run("watch", address=server).returncode == 1  # missing SOURCE
    assert run("frobnicate").returncode == 1


def test_an_unreachable_server_exits_2_with_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = run("templates", "list", address=address)
    assert result.returncode == 2
    assert result.stderr == (f"featuremap templates: no server at {address} — start one with `featuremap-server "
                             "serve` (or point --address at one)\n")
    # OpenCV's own warnings stay off stderr too (unless --verbose).
    unreadable = run("match", str(tmp_path / "nope.png"), address=f"127.0.0.1:{free_port()}")
    assert unreadable.returncode == 2 and len(unreadable.stderr.strip().splitlines()) == 1, unreadable.stderr
    verbose = run("match", str(tmp_path / "nope.png"), "--verbose", address=f"127.0.0.1:{free_port()}")
    assert len(verbose.stderr.strip().splitlines()) > 1


def test_watch_with_no_server_says_to_start_one_once(tmp_path):
    video = tmp_path / "clip.avi"
    moving_video(video, frames=6)
    address = f"127.0.0.1:{free_port()}"
    result = run("watch", str(video), "--template", "logo", address=address, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count(f"no server at {address}") == 1 and "featuremap-server serve" in result.stderr
    assert "resuming" not in result.stderr and "\n\n" not in result.stderr
    # Several addresses, none answering: the same one line, not a resume per address.
    several = f"{address},127.0.0.1:{free_port()}"
    result = run("watch", str(video), "--template", "logo", address=several, timeout=120)
    assert result.returncode == 2 and result.stderr.count(f"no server at {several}") == 1, result.stderr
    assert "resuming" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_demo_runs_end_to_end(tmp_path):
    # Nothing answers at FEATUREMAP_ADDRESS: the demo starts its own server.
    result = run("demo", "--out-dir", str(tmp_path / "out"), "--frames", "40", timeout=300,
                 env={"FEATUREMAP_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 0, result.stderr
    assert "every moving object found where it was, and the absent one never drawn" in result.stdout
    assert "demo-helmet: absent from the scene, drawn on 0 frames" in result.stdout
    for name in ("overlay.mp4", "heatmap.png", "contact_sheet.png", "detections.jsonl"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert len((tmp_path / "out" / "detections.jsonl").read_text().splitlines()) == 40
    assert cv2.imread(str(tmp_path / "out" / "contact_sheet.png")).shape == (2 * 240, 3 * 320, 3)


def test_ctrl_c_stops_watch_cleanly_and_keeps_what_was_written(server, tmp_path):
    import signal
    import time

    video = tmp_path / "long.avi"
    truth = moving_video(video, frames=400, step=0)
    x, y = truth[0]
    assert run("templates", "add", "--from-video", str(video), "--frame", "0", "--roi", f"{x},{y},24,24",
               "--id", "cli-long", address=server).returncode == 0
    lines = tmp_path / "d.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "featuremap.client.cli", "watch", str(video), "--template",
                                "cli-long", "--jsonl", str(lines), "--out", str(tmp_path / "o.mp4"), "--window", "1",
                                "--address", server], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not lines.exists() or len(lines.read_text().splitlines()) < 5):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err  # interrupted, after finishing the frame in hand
    kept = [json.loads(line) for line in lines.read_text().splitlines()]
    assert 5 <= len(kept) < 400
    assert [e["sequence"] for e in kept] == list(range(len(kept)))
    assert int(cv2.VideoCapture(str(tmp_path / "o.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == len(kept)


def test_sharp_edges_of_the_command_line(server, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (20, 20), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "t.png"), image)
    # The README's own negative angles, as separate words.
    added = run("templates", "add", str(tmp_path / "t.png"), "--id", "cli-edges", "--angles", "-30,0,30",
                "--scales", "1,1.2", address=server)
    assert added.returncode == 0, added.stderr
    template = json.loads(added.stdout)
    assert (template["angles"], template["scales"]) == ([-30.0, 0.0, 30.0], [1.0, 1.2])  # as given, not float32's
    for args, message in (
            (("match", str(tmp_path / "t.png"), "--top-k", "-2"), "--top-k: -2 must be 1 or more"),
            (("templates", "list", "--timeout", "0"), "--timeout: 0 must be more than 0"),
            (("templates", "list", "--address", "127.0.0.1:70000"), "a port from 1 to 65535"),
            (("templates", "add", str(tmp_path / "t.png"), "--roi", "1,2,3,4"), "go with --from-video"),
            (("watch", "x.mp4", "--max-reconnects", "-1"), "must be 0 or more")):
        result = run(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("featuremap 0.")
    # An explicit --address where nothing answers is said, not replaced by a server of the demo's own.
    demo = run("demo", "--out-dir", str(tmp_path / "demo"), address=f"127.0.0.1:{free_port()}")
    assert demo.returncode == 2 and "no featuremap server answers" in demo.stderr


def test_absent_templates_give_no_detection_by_default(server, tmp_path):
    rng = np.random.default_rng(3)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (120, 160), dtype=np.uint8), (0, 0), 1.5)
    elsewhere = cv2.GaussianBlur(rng.integers(0, 256, (120, 160), dtype=np.uint8), (0, 0), 1.5)
    cv2.imwrite(str(tmp_path / "present.png"), scene[30:54, 40:64])
    cv2.imwrite(str(tmp_path / "absent.png"), elsewhere[30:54, 40:64])
    cv2.imwrite(str(tmp_path / "scene.png"), scene)
    for name in ("present", "absent"):
        assert run("templates", "add", str(tmp_path / f"{name}.png"), "--id", f"cli-{name}",
                   address=server).returncode == 0
    matched = run("match", str(tmp_path / "scene.png"), "--template", "cli-present", "--template", "cli-absent",
                  address=server)
    assert [p["template"] for p in json.loads(matched.stdout)["peaks"]] == ["templates/cli-present"]
    everything = run("match", str(tmp_path / "scene.png"), "--template", "cli-present", "--template", "cli-absent",
                     "--threshold", "none", address=server)
    assert len(json.loads(everything.stdout)["peaks"]) == 2
