"""Triton kernels of mmengine, imported as ``mmengine.kernels``."""
