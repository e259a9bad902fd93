"""Training for ptt-faces: a DDPM on the curated faces (see training/train.py). Importing this package is cheap.

Sampling, FID and the exported pipeline live in ``evaluation/``, which the trainer calls for its periodic grids,
FID and export.
"""
