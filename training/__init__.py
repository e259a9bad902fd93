"""Training, sampling and evaluation for ptt-faces (see training/train.py). Importing this package is cheap."""
