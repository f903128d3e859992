"""The featuremap client side: the Python client, video sources, rendering and the CLI."""
