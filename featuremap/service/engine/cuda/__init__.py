"""The GPU path: CUDA kernels and the matcher that runs them (numba-cuda loads only when used).

``device`` says which devices are usable (no CUDA import), ``kernels`` holds
the CUDA kernels, ``matcher`` runs a core Matcher's plan on the GPU.
"""
