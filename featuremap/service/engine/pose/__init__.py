"""Pose search: templates found at any rotation and scale, coarse to fine over a pyramid.

``search`` holds :class:`~featuremap.service.engine.pose.search.PoseSearch`,
``scores`` its window kernels, ``template`` the rotated, scaled variants.
Built on the core's public :class:`~featuremap.service.engine.Matcher`.
"""
