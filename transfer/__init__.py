"""Transfer tasks (``mocobench transfer --task ...``): classification and detection evaluators run
on any backbone read through :func:`mocobench.checkpoint.load_backbone`.
"""
