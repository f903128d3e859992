"""The featuremap.v1 wire contract: protobuf messages and gRPC stubs.

``featuremap.proto`` beside this file is the source of truth; ``make proto``
regenerates the Python modules from it.
"""
