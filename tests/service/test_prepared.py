"""The cache of prepared Matchers: what they keep between calls (kernel spectra) stays within its share."""

import numpy as np

from featuremap.service.store.prepared import PreparedCache
from featuremap.service.store.templates import StoredTemplate


def template(tid: str, seed: int) -> StoredTemplate:
    rng = np.random.default_rng(seed)
    return StoredTemplate(id=tid, image=rng.random((40, 40, 1)).astype(np.float32), mask=None, etag=tid)


def test_matchers_are_kept_and_forgotten_by_what_they_retain():
    frame = np.random.default_rng(9).random((200, 240)).astype(np.float32)
    cache = PreparedCache(retained_bytes=1)  # room for the newest Matcher only
    first = cache.matcher(cache.variants(template("a", 1)), algorithm="spectral")
    assert cache.matcher(cache.variants(template("a", 1)), algorithm="spectral") is first  # kept
    first(frame)
    cache.trim(first)
    assert cache.retained_bytes() == first.retained_bytes() > 0
    second = cache.matcher(cache.variants(template("b", 2)), algorithm="spectral")
    second(frame)
    cache.trim(second)
    # Over its share: the least recently used one goes, the one just used stays.
    assert cache.retained_bytes() == second.retained_bytes()
    assert cache.matcher(cache.variants(template("b", 2)), algorithm="spectral") is second
    assert cache.matcher(cache.variants(template("a", 1)), algorithm="spectral") is not first
    roomy = PreparedCache(retained_bytes=1 << 30)
    kept = [roomy.matcher(roomy.variants(template(t, i)), algorithm="spectral") for i, t in enumerate("xyz")]
    for matcher in kept:
        matcher(frame)
        roomy.trim(matcher)
    assert roomy.retained_bytes() == sum(m.retained_bytes() for m in kept)
