"""mmengine: masked-diffusion LMs, token classifiers and sequence scorers.

Published as the distribution ``mmengine-diffusion`` (PyPI's ``mmengine`` is OpenMMLab's engine,
which installs the same import package: see :mod:`mmengine._distribution`); importing it where
OpenMMLab's is installed too says so in one line.

Kept light on purpose: importing ``mmengine`` (or ``mmengine.data.fastloader``) must not
import torch, so the loader can be embedded in numpy-only pipelines.

The Triton kernels live in the checkout's top-level ``kernels/`` folder and are installed as
``mmengine.kernels``: a wheel copies them to ``mmengine/kernels/``, and an editable install
(``pip install -e .``, which a checkout needs anyway to build the C++ extension) maps the name to
the folder.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from mmengine import _distribution

__version__ = "0.1.0"


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
            f"the mmengine package in {here} also holds OpenMMLab's mmengine files "
            f"({', '.join(n + '/' for n in theirs)}): {_distribution.DISTRIBUTION} and OpenMMLab's mmengine both "
            "install the import package mmengine and one was installed over the other; run "
            f"`pip uninstall mmengine {_distribution.DISTRIBUTION}` and reinstall the one you need "
            "(each in its own environment if you need both)"
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
