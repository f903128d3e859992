"""featuremap: streaming template matching served over gRPC.

The distribution's top-level package. Its subpackages live where the house
layout puts them: ``featuremap.v1`` (proto/featuremap/v1, the wire contract),
``featuremap.service`` (service/, the server and its Numba engine) and
``featuremap.client`` (client/, the Python client and command line).
"""

__version__ = "0.1.0"
