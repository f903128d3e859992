"""featuremap: streaming template matching served over gRPC.

The distribution's top-level package, laid out by import name:
``featuremap.v1`` (the wire contract and its generated stubs),
``featuremap.wire`` (the one module that reads and writes it),
``featuremap.service`` (the server and its Numba engine) and
``featuremap.client`` (the Python client and command line).
"""

__version__ = "0.1.0"
