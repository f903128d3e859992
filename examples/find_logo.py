"""Find a logo in every frame of a video: the client library in a README-sized script.

    featuremap-server serve &            # or any server you can reach
    python examples/find_logo.py logo.png clip.mp4

`make lint` type-checks this script with ``mypy --strict``, as a user's own
script would be checked.
"""

from __future__ import annotations

import sys

import cv2

from featuremap.client import FeatureMapClient, FeatureMapError, FrameResult, Peak
from featuremap.client.render import draw_peaks, result_heatmap, write_image
from featuremap.client.video import open_source


def best(result: FrameResult) -> Peak | None:
    """The frame's best peak, if any."""
    return max(result.peaks, key=lambda peak: peak.score, default=None)


def main(logo_path: str, video: str, address: str = "localhost:50051") -> int:
    logo = cv2.imread(logo_path, cv2.IMREAD_COLOR)
    if logo is None:
        print(f"cannot read {logo_path}", file=sys.stderr)
        return 2
    with FeatureMapClient(address, timeout=30) as client, open_source(video) as source:
        try:
            client.create_template(logo, template_id="logo", display_name="the logo")
        except FeatureMapError as error:
            print(f"the logo is already there ({error.code.name})", file=sys.stderr)
        frames = ((index, stamp, frame) for index, stamp, frame in source)
        last = None
        for result in client.stream(frames, templates=["logo"], method="ccoeff_normed", top_k=1, threshold=0.8,
                                    maps="float16"):
            peak = best(result)
            if peak is not None:
                print(f"frame {result.sequence}: logo at ({peak.x:.0f}, {peak.y:.0f}), score {peak.score:.2f}")
            last = result
    if last is not None:
        first = cv2.VideoCapture(video).read()[1]
        if first is not None:
            write_image("logo-peaks.png", draw_peaks(first, last.peaks))
            heat = result_heatmap(first, last)
            if heat is not None:
                write_image("logo-heatmap.png", heat)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
