"""The featuremap service: the matching engine, the template bank and the gRPC server."""
