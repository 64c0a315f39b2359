"""mmengine: masked-diffusion LMs, token classifiers and sequence scorers.

Published as the distribution ``mmengine-diffusion`` (PyPI's ``mmengine`` is OpenMMLab's engine,
which installs the same import package: see :mod:`mmengine._distribution`); importing it where
OpenMMLab's is installed too says so in one line.

Kept light on purpose: importing ``mmengine`` (or ``mmengine.data.fastloader``) must not
import torch, so the loader can be embedded in numpy-only pipelines.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from pathlib import Path

from mmengine import _distribution

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
    in_checkout = (checkout_kernels / "__init__.py").is_file() and (here.parent / "setup.py").is_file()
    if in_checkout and not any(isinstance(f, _SourceKernelsFinder) for f in sys.meta_path):
        sys.meta_path.append(_SourceKernelsFinder(checkout_kernels))


_install_source_kernels_finder()


class PackageClashWarning(UserWarning):
    """OpenMMLab's ``mmengine`` is installed in this environment too (same import package)."""


def _check_package_clash() -> None:
    """One line when OpenMMLab's mmengine shares this environment; an error when its files are mixed into ours.

    Costs one directory listing per ``sys.path`` folder (well under a millisecond).
    """
    here = Path(__file__).resolve().parent
    theirs = _distribution.openmmlab_files(here)
    if theirs:
        message = (
            f"the mmengine package in {here} also holds OpenMMLab's mmengine files ({', '.join(n + '/' for n in theirs)}): "
            f"{_distribution.DISTRIBUTION} and OpenMMLab's mmengine both install the import package mmengine and one was "
            f"installed over the other; run `pip uninstall mmengine {_distribution.DISTRIBUTION}` and reinstall the one you "
            "need (each in its own environment if you need both)"
        )
        if sys.argv[:1] == ["-m"]:  # `python -m mmengine.<command>` is locating its module: a CLI, so one line
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(1)
        raise ImportError(message)
    for name, version, info_dir in _distribution.foreign_distributions(sys.path):
        warnings.warn_explicit(
            f"{name} {version} is installed here too and installs the same import package mmengine as this project "
            f"({_distribution.DISTRIBUTION}): whichever comes first on sys.path hides the other, and installing one "
            "over the other breaks both; keep them in separate environments",
            PackageClashWarning,
            filename=info_dir,
            lineno=0,
        )


_check_package_clash()
