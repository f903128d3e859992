"""Plain templates under the default decision, through the real command and a real server: a soft
gradient and the smoothest window of another photograph, absent from a clip of a real photograph,
are not drawn; a crop of the clip is, on every frame; the threshold each template needs is kept
with it in the bank's SQLite file.

The same absent templates are drawn at a fixed 0.7 (``--threshold 0.7``): what the default decision
was before templates carried their texture's threshold.
"""

import json

import cv2
import numpy as np
import pytest
from skimage import data

from featuremap.client import FeatureMapClient

from service_helpers import featuremap_command, serving_process, start_process, wait_serving_at

SIZE = 40


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 320x240 MJPG clip of scikit-image's astronaut moving 3 px right and 2 down a frame; a crop
    of its first frame; a soft gradient; the smoothest 40x40 window of the coffee photograph."""
    folder = tmp_path_factory.mktemp("plain")
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frames = [astronaut[100 + 2 * t:340 + 2 * t, 80 + 3 * t:400 + 3 * t] for t in range(6)]
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    cv2.imwrite(str(folder / "crop.png"), frames[0][20:20 + SIZE, 120:120 + SIZE])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cv2.imwrite(str(folder / "gradient.png"), (60 + 2.5 * xx + 0.8 * yy).astype(np.uint8))
    coffee = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(coffee, cv2.COLOR_BGR2GRAY).astype(np.float32)
    windows = [(y, x) for y in range(0, gray.shape[0] - SIZE, 8) for x in range(0, gray.shape[1] - SIZE, 8)
               if gray[y:y + SIZE, x:x + SIZE].std() > 3]  # shaded, not flat

    def roughness(at):
        gy, gx = np.gradient(gray[at[0]:at[0] + SIZE, at[1]:at[1] + SIZE])
        return float((gx ** 2 + gy ** 2).mean())

    y, x = min(windows, key=roughness)
    cv2.imwrite(str(folder / "smooth.png"), coffee[y:y + SIZE, x:x + SIZE])
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``featuremap-server serve`` on a data folder of its own (restarted by a test on the same folder)."""
    folder = tmp_path_factory.mktemp("bank")
    with serving_process(folder) as (port, process):
        yield folder, port, process


def drawn(lines_file) -> dict[str, int]:
    """Frames each template was drawn on."""
    counts: dict[str, int] = {}
    for line in lines_file.read_text().splitlines():
        for peak in json.loads(line)["peaks"]:
            name = peak["template"].split("/")[-1]
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_plain_absent_templates_are_not_drawn_and_their_thresholds_persist(server, files, tmp_path):
    folder, port, process = server
    address = f"127.0.0.1:{port}"
    added = {}
    for name in ("crop", "gradient", "smooth"):
        result = featuremap_command("templates", "add", str(files / f"{name}.png"), "--id", name, address=address,
                                    timeout=180)
        assert result.returncode == 0, result.stderr
        added[name] = json.loads(result.stdout)["texture_threshold"]
        if name == "gradient":  # told at once that it is plain, and what it needs
            assert "gradient has little texture" in result.stderr and "--threshold" in result.stderr
    assert 0.7 <= added["crop"] < 0.8 < 0.9 <= added["smooth"] < 0.99 <= added["gradient"] < 1.0

    default, fixed = tmp_path / "default.jsonl", tmp_path / "fixed.jsonl"
    for lines, extra in ((default, ()), (fixed, ("--threshold", "0.7"))):
        watched = featuremap_command("watch", str(files / "clip.avi"), "--template", "crop", "--template",
                                     "gradient", "--template", "smooth", "--jsonl", str(lines), *extra,
                                     address=address, timeout=180)
        assert watched.returncode == 0, watched.stderr
    assert drawn(default) == {"crop": 6}  # the crop on every frame; neither absent template on any
    at_fixed = drawn(fixed)
    assert at_fixed["crop"] == 6 and at_fixed["gradient"] == 6 and at_fixed["smooth"] == 6

    # Kept with the template: a server restarted on the same SQLite file answers the same thresholds.
    process.terminate()
    process.wait(60)
    again = start_process(folder, port)
    try:
        wait_serving_at(address)
        with FeatureMapClient(address, timeout=30) as client:
            assert {t.id: t.texture_threshold for t in client.list_templates()} == added
    finally:
        again.terminate()
        again.wait(60)
