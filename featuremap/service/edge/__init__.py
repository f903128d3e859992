"""The server edge: the gRPC server, its command and settings, authentication, metrics, logs and health.

The only place gRPC status codes live (``status`` maps the project's errors
to them); everything below is reached through plain calls and return values.
"""
