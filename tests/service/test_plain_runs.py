"""A plain template's spare peaks are its own: a template beside it in the plan gets the peaks it gets alone.

The plain decision asks the engine for ``PLAIN_SPARE`` more peaks of a plain template, since its
lighting test comes after the engine's top_k. Asked of a whole matcher run, the spares also reached a
template with several variants: a variant's peak beyond top_k entered its merge where, alone, it had
been cut. Here a 32x32 template registered at scales 1 and 0.5 is pasted at half size twice, 12
pixels apart (one peak of the half-size variant each, merged into one), and once more, noisier,
elsewhere: that third copy is the half-size variant's third peak. At top_k 2 the template's answer
is the first copy and its best full-size window, with or without a plain gradient in the plan.
"""

import cv2
import numpy as np

from featuremap.v1 import featuremap_pb2 as pb
from featuremap.wire import image_message

from service_helpers import create, running_server, scene


def frame_with_copies() -> tuple[np.ndarray, np.ndarray]:
    part = scene(11, 32, 32)
    half = cv2.resize(part, (16, 16), interpolation=cv2.INTER_AREA)
    frame = scene(12, 240, 320).copy()
    rng = np.random.default_rng(1)

    def paste(image, x, y, noise):
        noisy = image + rng.normal(0, noise, image.shape)
        frame[y:y + image.shape[0], x:x + image.shape[1]] = np.clip(noisy, 0, 255).astype(np.uint8)

    paste(half, 50, 50, 0)  # its right third covered by the next copy: about 0.78
    paste(half, 62, 50, 0)  # 1.0, 12 pixels from the first: one place for the merge
    paste(half, 200, 60, 10)  # about 0.72: the half-size variant's third peak
    paste(part, 100, 150, 20)  # the full-size variant's best, about 0.5
    return part, frame


def peaks_of(stub, templates: list[str], frame: np.ndarray) -> list[tuple]:
    config = pb.MatchConfig(templates=templates, peaks=pb.PeakOptions(top_k=2, threshold=0.3, template_thresholds=True))
    result = stub.Match(pb.MatchRequest(config=config, frame=pb.Frame(image=image_message(frame))), timeout=120).result
    return [(p.template, round(p.cx, 3), round(p.cy, 3), round(p.score, 5), p.scale) for p in result.peaks
            if p.template == "templates/part"]


def test_a_plain_templates_spare_peaks_do_not_change_another_templates_answer(tmp_path):
    part, frame = frame_with_copies()
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    ramp = (60 + 1.2 * xx + 0.5 * yy).astype(np.uint8)
    with running_server(tmp_path) as (stub, _, _):
        create(stub, part, "part", scales=[1.0, 0.5])
        assert create(stub, ramp, "ramp").texture_threshold >= 0.8  # plain: it takes the plain decision
        alone = peaks_of(stub, ["part"], frame)
        # The first copy (its centre at 69.5, 57.5) and the full-size window at its place (115.5, 165.5).
        assert [(cx, cy, scale) for _, cx, cy, _, scale in alone] == [(69.5, 57.5, 0.5), (115.5, 165.5, 1.0)], alone
        assert peaks_of(stub, ["part", "ramp"], frame) == alone
