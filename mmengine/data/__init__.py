"""Data side of mmengine: preparation, the C++ fast loader, samplers and batch builders.

Deliberately empty: ``import mmengine.data.fastloader`` must stay free of torch.
"""
