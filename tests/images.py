"""Test images: random, structured and textured, reproducible from a seed."""

from __future__ import annotations

import cv2
import numpy as np


def random_image(rng, height, width, channels, dtype):
    """Uniform noise: 0..255 for uint8, 0..1 for float32."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


def structured_image(rng, height, width, channels, dtype):
    """Smoothed noise with filled shapes: edges, gradients and flat patches, like real frames."""
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (0, 0), 1.5)
    for _ in range(6):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(3, max(4, width // 6))), colour, -1)
    if channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    return image if dtype == np.uint8 else (image / np.float32(255)).astype(np.float32)


def binary_texture(rng, height, width, channels):
    """+-1 noise (float32): every window has the same energy, so even the plain dot
    product peaks only where the template really is."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)
