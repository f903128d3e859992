"""Every example in the package's docstrings runs, against a real server where it talks to one.

The examples name ``address`` (a running server's "host:port"), ``frame``
(a textured gray image) and ``frames`` (a few of them); they are given here.
"""

import doctest
import importlib
import pkgutil

import pytest

import featuremap

from service_helpers import scene


def modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(featuremap.__path__, "featuremap."):
        if info.name.endswith("__main__") or ".cuda." in info.name:  # (__main__ runs a command; cuda needs numba-cuda)
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder(exclude_empty=True).find(module)):
            names.append(info.name)
    return names


def test_the_package_has_examples_in_its_docstrings():
    assert {"featuremap.client", "featuremap.client.client", "featuremap.service.engine"} <= set(modules_with_examples())


@pytest.mark.parametrize("name", modules_with_examples())
def test_every_docstring_example_runs(name, module_server):
    _, _, running = module_server
    module = importlib.import_module(name)
    frame = scene(3, 120, 160)
    context = {"address": f"127.0.0.1:{running.port}", "frame": frame, "frames": [frame, frame]}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tried = 0
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, globs={**vars(module), **context}):
        tried += len(test.examples)
        runner.run(test)
    assert tried > 0
    assert runner.failures == 0, f"{runner.failures} example(s) of {name} failed (their output is above)"
