"""Frame sources and rendering, on real files written by OpenCV."""

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from featuremap.client import Peak, render
from featuremap.client.video import SourceError, open_source


def write_video(path, frames=12, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, size)
    for t in range(frames):
        writer.write(np.full((size[1], size[0], 3), t * 20, np.uint8))
    writer.release()


def test_video_file(tmp_path):
    write_video(tmp_path / "v.avi")
    with open_source(str(tmp_path / "v.avi")) as source:
        assert (source.fps, source.frame_count, source.live) == (15.0, 12, False)
        items = list(source)
    assert [i for i, _, _ in items] == list(range(12))
    assert items[3][1] == pytest.approx(3 / 15.0, abs=1e-3)
    assert items[5][2].shape == (48, 64, 3)


def test_images_folders_and_globs(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 9), i * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [f[2][0, 0] for f in open_source(str(tmp_path))] == [0, 50, 100]
    assert open_source(str(tmp_path / "f*.png")).frame_count == 3
    (single,) = list(open_source(str(tmp_path / "f1.png")))
    assert single[2][0, 0] == 50


def test_sources_that_cannot_be_opened_name_themselves(tmp_path):
    with pytest.raises(SourceError, match="missing.mp4: no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="bad.mp4"):
        list(open_source(str(tmp_path / "bad.mp4")))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(SourceError, match="bad.png is not a readable image"):
        list(open_source(str(tmp_path / "bad.png")))
    with pytest.raises(SourceError, match="no images found"):
        open_source(str(tmp_path / "*.jpg"))
    with pytest.raises(SourceError, match="camera '97'"):
        open_source("97")
    assert open_source.__doc__


def test_rendering(tmp_path):
    frame = np.zeros((40, 50), np.uint8)
    drawn = render.draw_peaks(np.zeros((120, 160), np.uint8), [Peak("templates/a", 5, 30, 10, 12, 0.9)], tracks=[7])
    assert drawn.shape == (120, 160, 3) and drawn[30, 5].any() and not drawn[100, 150].any()
    assert drawn[20, 8].any()  # the label, on its filled background above the box
    drawn = render.draw_peaks(frame, [Peak("templates/a", 5, 6, 10, 12, 0.9)])
    assert drawn.shape == (40, 50, 3) and drawn[6, 5].any()
    score = np.zeros((31, 41), np.float32)
    score[10, 20] = 1.0
    hot = render.heatmap(score)
    assert hot.shape == (31, 41, 3) and not np.array_equal(hot[10, 20], hot[0, 0])
    assert np.array_equal(render.heatmap(-score, "sqdiff"), hot)  # hot = best for every method
    over = render.heatmap_over(frame, score, template_size=(10, 10))
    assert over.shape == (40, 50, 3) and over[15, 25].any()
    assert render.beside(frame, hot).shape == (40, 50 + int(41 * 40 / 31), 3)
    with render.VideoWriter(tmp_path / "o.mp4", 10) as writer:
        for _ in range(4):
            writer.write(drawn)
    assert int(cv2.VideoCapture(str(tmp_path / "o.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    render.write_image(tmp_path / "sub" / "x.png", drawn)
    assert cv2.imread(str(tmp_path / "sub" / "x.png")).shape == (40, 50, 3)
    with pytest.raises(OSError, match="cannot write image"):
        render.write_image(tmp_path / "x.nope", drawn)


def test_templates_get_distinct_colours_that_they_keep():
    palette = render.Palette()
    names = [f"templates/t{i}" for i in range(10)]
    colours = [palette(name) for name in names]
    assert len(set(colours)) == 10
    assert [palette(name) for name in reversed(names)] == colours[::-1]


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg is not installed (CI installs it)")
def test_mp4_is_h264_when_ffmpeg_is_there(tmp_path):
    with render.VideoWriter(tmp_path / "o.mp4", 25) as writer:
        for t in range(12):
            writer.write(np.full((61, 81, 3), t * 20, np.uint8))  # odd sizes: padded to even for yuv420p
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                            "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(tmp_path / "o.mp4")],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "h264,12"
