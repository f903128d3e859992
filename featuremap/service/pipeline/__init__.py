"""The frame path: a frame decoded, matched against the bank's templates and its answer encoded.

``codec`` decodes and encodes, ``frames`` plans a config and runs each frame,
``matching`` computes, ``streaming`` paces a stream, ``budget`` and
``batching`` bound memory and GPU batches. It takes its limits and its
metrics as arguments from the server edge, raises the project's own errors
and never imports the RPC library.
"""
