"""The featuremap client side: the Python client, video sources, rendering and the CLI.

>>> from featuremap.client import FeatureMapClient                      # doctest: +SKIP
>>> with FeatureMapClient("localhost:50051") as client:                  # doctest: +SKIP
...     client.create_template(frame[100:132, 200:232], template_id="patch")
...     result = client.match(frame, templates=["patch"])
...     print(result.peaks)
"""

from .client import FeatureMapClient, FeatureMapError, FrameResult, Peak, TemplateInfo, match_config

__all__ = ["FeatureMapClient", "FeatureMapError", "FrameResult", "Peak", "TemplateInfo", "match_config"]
