"""mmengine: masked-diffusion LMs, token classifiers and sequence scorers.

Kept light on purpose: importing ``mmengine`` (or ``mmengine.data.fastloader``) must not
import torch, so the loader can be embedded in numpy-only pipelines.

The Triton kernels live in the checkout's top-level ``kernels/`` folder and are installed as
``mmengine.kernels``: a wheel copies them to ``mmengine/kernels/``, and an editable install
(``pip install -e .``, which a checkout needs anyway to build the C++ extension) maps the name to
the folder.
"""
from __future__ import annotations

__version__ = "0.1.0"
