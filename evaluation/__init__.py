"""Sampling, features, FID/KID, the checkpoint sweep, the exported pipeline and its model card, publishing.

It knows the curated dataset (``curation``) and diffusers' ``DDPMPipeline`` folder, never ``training``: the
trainer calls into it (periodic grids, periodic FID, export), so it stands one floor below ``training``.
"""
