"""``python -m featuremap.service serve|warmup``: the same as ``featuremap-server``."""

import sys

from .edge.command import main

sys.exit(main(prog="python -m featuremap.service"))
