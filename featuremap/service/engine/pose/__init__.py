"""Pose search: templates found at any rotation and scale, coarse to fine over a pyramid.

``search`` holds :class:`~featuremap.service.engine.pose.search.PoseSearch`
and its descent; its stages are ``grid`` (the pose grid, the top level's
bank), ``top`` (places and angle hypotheses) and ``finish`` (sub-pixel,
level 0, the twin), sharing ``parts`` (the result, a candidate, a frame);
``scores`` holds the window kernels, ``template`` the rotated, scaled variants.
Built on the core's public :class:`~featuremap.service.engine.Matcher`.
"""
