"""Pose search: templates found at any rotation and scale, coarse to fine over a pyramid.

``search`` holds :class:`~featuremap.service.engine.pose.search.PoseSearch`;
its stages are ``grid`` (the pose grid, the top level's bank), ``top`` (places
and angle hypotheses), ``descent`` (down the levels) and ``finish`` (sub-pixel,
level 0, the twin), sharing ``parts`` (the result, a candidate, a frame) and
``windows`` (scores of poses over small windows); ``scores`` holds the window
kernels, ``batch`` the kernels that score many windows in one call,
``template`` the rotated, scaled variants.
Built on the core's public :class:`~featuremap.service.engine.Matcher`.
"""
