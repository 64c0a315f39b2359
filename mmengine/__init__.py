"""mmengine: masked-diffusion LMs, token classifiers and sequence scorers.

Kept light on purpose: importing ``mmengine`` (or ``mmengine.data.fastloader``) must not
import torch, so the loader can be embedded in numpy-only pipelines.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


class _SourceKernelsFinder(importlib.abc.MetaPathFinder):
    """Maps ``mmengine.kernels`` to the top-level ``kernels/`` folder of a source checkout.

    An installed wheel (and an editable install) already places the folder at
    ``mmengine/kernels``; only running straight from a checkout needs this hook.
    """

    def __init__(self, kernels_dir: Path):
        self._kernels_dir = kernels_dir

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mmengine.kernels":
            return None
        return importlib.util.spec_from_file_location(
            fullname,
            self._kernels_dir / "__init__.py",
            submodule_search_locations=[str(self._kernels_dir)],
        )


def _install_source_kernels_finder() -> None:
    here = Path(__file__).resolve().parent
    if (here / "kernels" / "__init__.py").is_file():
        return
    checkout_kernels = here.parent / "kernels"
    if (checkout_kernels / "__init__.py").is_file() and (here.parent / "setup.py").is_file():
        if not any(isinstance(f, _SourceKernelsFinder) for f in sys.meta_path):
            sys.meta_path.append(_SourceKernelsFinder(checkout_kernels))


_install_source_kernels_finder()
