"""The ``featuremap`` command on a user's own files, against a real server: an RGBA PNG logo, a gray
template on a colour clip, a 16-bit image, a template larger than the video, a pose's heatmap, a
template added again, and a server that is not there yet or still compiling its kernels."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from featuremap.client import FeatureMapClient, FeatureMapWarning

from service_helpers import featuremap_command as run
from service_helpers import running_server

FPS = 12.0


@pytest.fixture(scope="module")
def server(server_process):
    return server_process


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An RGBA logo whose transparent corners hold magenta (as exporters often leave them), a clip
    (MJPG, 12 fps, 240x160) where its opaque pixels move 8 px a frame right from (20, 50), a gray
    template cut from the clip's still background at (150, 10), a frame of the clip, a full mask."""
    folder = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(11)
    logo = cv2.GaussianBlur(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (0, 0), 1.0)
    alpha = np.zeros((40, 40), np.uint8)
    cv2.circle(alpha, (20, 20), 19, 255, -1)
    logo[alpha == 0] = (255, 0, 255)
    cv2.imwrite(str(folder / "logo.png"), np.dstack([logo, alpha]))
    cv2.imwrite(str(folder / "full.png"), np.full((40, 40), 255, np.uint8))
    background = cv2.GaussianBlur(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8), (0, 0), 2.0)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(background[10:40, 150:190], cv2.COLOR_BGR2GRAY))
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (240, 160))
    inside = alpha > 0
    for t in range(10):
        frame = background.copy()
        frame[50:90, 20 + 8 * t:60 + 8 * t][inside] = logo[inside]
        writer.write(frame)
        if t == 0:
            cv2.imwrite(str(folder / "frame.png"), frame)
    writer.release()
    return folder, alpha


def test_an_rgba_logo_is_matched_on_its_opaque_pixels_and_a_gray_template_in_colour_video(server, files, tmp_path):
    folder, alpha = files
    added = run("templates", "add", str(folder / "logo.png"), "--id", "own-logo", address=server)
    assert added.returncode == 0 and added.stderr == "", added.stderr
    assert json.loads(added.stdout)["channels"] == 3  # stored as BGR, its alpha the mask
    whole = run("templates", "add", str(folder / "logo.png"), "--id", "own-logo-whole", "--mask",
                str(folder / "full.png"), address=server)
    gray = run("templates", "add", str(folder / "gray.png"), "--id", "own-gray", address=server)
    assert whole.returncode == 0 and gray.returncode == 0 and json.loads(gray.stdout)["channels"] == 1
    with FeatureMapClient(server, timeout=30) as client:
        assert np.array_equal(client.get_template("own-logo").mask.astype(bool), alpha >= 128)
        assert client.get_template("own-logo-whole").mask.all()  # an explicit --mask wins over the alpha
    lines, out = tmp_path / "d.jsonl", tmp_path / "o.avi"
    watched = run("watch", str(folder / "clip.avi"), "--template", "own-logo", "--template", "own-gray", "--template",
                  "own-logo-whole", "--jsonl", str(lines), "--out", str(out), "--threshold", "none", address=server)
    assert watched.returncode == 0, watched.stderr
    assert "cannot be matched" not in watched.stderr  # every template is matched: none skipped, none named
    entries = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(10))
    for entry in entries:
        assert entry["source"] == str(folder / "clip.avi")
        found = {p["template"].split("/")[-1]: p for p in entry["peaks"]}
        logo, gray = found["own-logo"], found["own-gray"]
        assert abs(logo["x"] - (20 + 8 * entry["sequence"])) <= 1 and abs(logo["y"] - 50) <= 1, entry
        assert logo["score"] > 0.8 and (logo["cx"], logo["cy"]) == (logo["x"] + 19.5, logo["y"] + 19.5)
        assert abs(gray["x"] - 150) <= 1 and abs(gray["y"] - 10) <= 1 and gray["score"] > 0.8, entry
        # The magenta corners, counted without the alpha, are what the scene does not have.
        assert found["own-logo-whole"]["score"] < logo["score"] - 0.1, entry
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(FPS, abs=0.01)  # the source's rate
    faster = run("watch", str(folder / "clip.avi"), "--template", "own-logo", "--out", str(out), "--fps", "5",
                 address=server)
    assert faster.returncode == 0 and cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(5, abs=0.01)


def test_a_16_bit_image_is_sent_as_8_bit_with_a_note(server, files, tmp_path):
    folder, _ = files
    patch = cv2.imread(str(folder / "frame.png"))[100:130, 160:200]
    cv2.imwrite(str(tmp_path / "deep.png"), patch.astype(np.uint16) * 257)
    added = run("templates", "add", str(tmp_path / "deep.png"), "--id", "own-deep", address=server)
    assert added.returncode == 0, added.stderr
    assert added.stderr == f"featuremap templates: note: {tmp_path / 'deep.png'} is 16-bit: sent as 8-bit (each value / 257)\n"
    with FeatureMapClient(server, timeout=30) as client:
        assert np.array_equal(client.get_template("own-deep").image, patch)  # on the frames' scale, not 257 times it
        with pytest.warns(FeatureMapWarning, match="the template image is 16-bit"):
            client.create_template(patch.astype(np.uint16) * 257, template_id="own-deep-array")
        assert np.array_equal(client.get_template("own-deep-array").image, patch)


def test_templates_the_source_cannot_take_are_named_once_by_id_and_left_out(server, files, tmp_path):
    folder, _ = files
    cv2.imwrite(str(tmp_path / "big.png"), np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "grows.png"), np.random.default_rng(4).integers(0, 256, (60, 60, 3), dtype=np.uint8))
    for name, extra in (("big", ()), ("grows", ("--scales", "1,3")), ("logo", ())):
        image = folder / "logo.png" if name == "logo" else tmp_path / f"{name}.png"
        assert run("templates", "add", str(image), "--id", f"fit-{name}", "--replace", *extra,
                   address=server).returncode == 0
    lines = tmp_path / "d.jsonl"
    watched = run("watch", str(folder / "clip.avi"), *[a for n in ("big", "grows", "logo") for a in
                                                        ("--template", f"fit-{n}")], "--jsonl", str(lines),
                  address=server)
    assert watched.returncode == 0, watched.stderr
    said = [line for line in watched.stderr.splitlines() if "cannot be matched" in line]
    assert said == [f"featuremap watch: 2 templates cannot be matched against {folder / 'clip.avi'}, left out: "
                    "fit-big (300x200, larger than the 240x160 frame); "
                    "fit-grows (180x180 at scale 3, angle 0, larger than the 240x160 frame)"], watched.stderr
    assert "template 0" not in watched.stderr and "template 1" not in watched.stderr
    entries = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(entries) == 10 and all([p["template"] for p in e["peaks"]] == ["templates/fit-logo"] for e in entries)
    alone = run("watch", str(folder / "clip.avi"), "--template", "fit-big", address=server)
    assert alone.returncode == 2 and alone.stderr.count("fit-big") == 1 and "nothing left to match" in alone.stderr
    assert len(alone.stderr.strip().splitlines()) == 1, alone.stderr
    matched = run("match", str(folder / "frame.png"), "--template", "fit-big", "--template", "fit-logo",
                  address=server)
    assert matched.returncode == 0 and "fit-big (300x200" in matched.stderr, matched.stderr
    assert [p["template"] for p in json.loads(matched.stdout)["peaks"]] == ["templates/fit-logo"]


def test_a_pose_heatmap_is_drawn_in_the_poses_frame(server, tmp_path):
    rng = np.random.default_rng(5)
    part = cv2.GaussianBlur(rng.integers(0, 256, (28, 44, 3), dtype=np.uint8), (0, 0), 1.0)
    tray = cv2.GaussianBlur(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8), (0, 0), 2.0)
    turn = cv2.getRotationMatrix2D((22, 14), 35.0, 1.0)
    turn[:, 2] += (120 - 22, 80 - 14)
    cv2.warpAffine(part, turn, (240, 160), tray, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    cv2.imwrite(str(tmp_path / "part.png"), part)
    cv2.imwrite(str(tmp_path / "tray.png"), tray)
    assert run("templates", "add", str(tmp_path / "part.png"), "--id", "own-part", "--angle-range=-180,180",
               "--replace", address=server).returncode == 0
    matched = run("match", str(tmp_path / "tray.png"), "--template", "own-part", "--heatmap", str(tmp_path / "h.png"),
                  address=server)
    assert matched.returncode == 0, matched.stderr
    (pose,) = json.loads(matched.stdout)["peaks"]
    assert abs(pose["angle"] - 35) < 1 and abs(pose["cx"] - 120) < 1 and abs(pose["cy"] - 80) < 1, pose
    heat = cv2.imread(str(tmp_path / "h.png"))
    corners = cv2.boxPoints(((pose["cx"], pose["cy"]), (pose["width"], pose["height"]), -pose["angle"]))
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):  # the turned box, white, along every edge
        x, y = np.round((a + b) / 2).astype(int)
        assert heat[y - 1:y + 2, x - 1:x + 2].min(axis=2).max() >= 200, (x, y)


def test_adding_an_id_again_says_how_and_replace_replaces(server, files, tmp_path):
    folder, _ = files
    assert run("templates", "add", str(folder / "gray.png"), "--id", "own-again", address=server).returncode == 0
    again = run("templates", "add", str(folder / "logo.png"), "--id", "own-again", address=server)
    assert again.returncode == 2 and "--replace" in again.stderr and len(again.stderr.splitlines()) == 1
    replaced = run("templates", "add", str(folder / "logo.png"), "--id", "own-again", "--replace", address=server)
    assert replaced.returncode == 0 and json.loads(replaced.stdout)["channels"] == 3  # the logo now, not the gray


def test_a_server_compiling_its_kernels_is_waited_for_and_said(tmp_path):
    with running_server(tmp_path) as (_, _, running):
        running.set_serving(False)  # as a server is until its kernels are compiled (a cold cache)
        process = subprocess.Popen([sys.executable, "-m", "featuremap.client.cli", "templates", "list", "--address",
                                    f"127.0.0.1:{running.port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            first = process.stderr.readline()  # said before anything else, while it waits
            running.set_serving(True)
            out, rest = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    assert "is compiling kernels (first run only, about a minute" in first, first + rest
    assert process.returncode == 0 and "kernels ready after" in rest, rest


def test_a_server_that_goes_away_is_said_once_not_at_every_try(tmp_path):
    import time

    from service_helpers import free_port, start_process, wait_serving

    import grpc

    rng = np.random.default_rng(6)
    still = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2)
    writer = cv2.VideoWriter(str(tmp_path / "long.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for _ in range(400):
        writer.write(still)
    writer.release()
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = start_process(tmp_path / "data", port)
    try:
        channel = grpc.insecure_channel(address)
        wait_serving(channel)
        channel.close()
        with FeatureMapClient(address, timeout=30) as client:
            client.create_template(still[30:62, 40:72], template_id="still")
        lines = tmp_path / "d.jsonl"
        watch = subprocess.Popen([sys.executable, "-m", "featuremap.client.cli", "watch", str(tmp_path / "long.avi"),
                                  "--template", "still", "--jsonl", str(lines), "--window", "1", "--address", address],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60  # a bound on the wait: until some frames are answered
        while not lines.exists() or len(lines.read_text().splitlines()) < 5:
            assert time.monotonic() < deadline and watch.poll() is None, "no frame answered"
            time.sleep(0.05)
    finally:
        server.kill()  # gone mid-stream, for good
        server.wait(60)
        server.stdout.close()
        server.stderr.close()
    _, err = watch.communicate(timeout=120)
    assert watch.returncode == 2, err
    assert err.count("stream lost") == 1, err  # one line for the loss, none for each try after it
    assert f"no server at {address}" in err.strip().splitlines()[-1] and "\n\n" not in err, err
