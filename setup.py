"""Builds mmengine (distribution ``mmengine-diffusion``) and its C++ extension ``mmengine._fastloader``.

Metadata lives in pyproject.toml; this file only describes what setuptools cannot
express there: the pybind11 extension and the top-level ``kernels/`` folder, which
is installed as the ``mmengine.kernels`` subpackage (never as a bare ``kernels``),
and the refusal to install over OpenMMLab's ``mmengine`` (the same import package).
"""
import importlib.util
import sys
import sysconfig
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

# Commands that put the package into an environment (pip runs bdist_wheel / editable_wheel).
INSTALLING = {"bdist_wheel", "editable_wheel", "install", "develop"}


def refuse_openmmlab_mmengine() -> None:
    """Stop with one line when the target environment holds OpenMMLab's mmengine: installing there
    would overwrite its files (and it ours). The target is this interpreter's site-packages, which
    pip's build subprocess shares even with build isolation."""
    spec = importlib.util.spec_from_file_location(
        "_mmengine_distribution", Path(__file__).resolve().parent / "mmengine" / "_distribution.py"
    )
    distribution = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(distribution)
    site = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    found = [f"{name} {version} at {info}" for name, version, info in distribution.foreign_distributions(site)]
    found += [f"its files at {Path(s) / 'mmengine' / d}"
              for s in site for d in distribution.openmmlab_files(Path(s) / "mmengine")]
    if found:
        sys.exit(
            f"error: this environment holds OpenMMLab's mmengine ({found[0]}), which installs the same import package "
            f"mmengine as {distribution.DISTRIBUTION}; installing here would overwrite its files: use a separate "
            "environment (or `pip uninstall mmengine` first if you no longer need it)"
        )


if INSTALLING.intersection(sys.argv[1:]):
    refuse_openmmlab_mmengine()

fastloader = Pybind11Extension(
    "mmengine._fastloader",
    sources=sorted(__import__("glob").glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

packages = find_packages(include=["mmengine", "mmengine.*"])
kernel_packages = ["mmengine.kernels"] + [
    "mmengine.kernels." + p for p in find_packages(where="kernels")
]

setup(
    packages=packages + kernel_packages,
    package_dir={"mmengine.kernels": "kernels"},
    package_data={"mmengine": ["assets/*.txt", "py.typed"]},
    include_package_data=False,
    ext_modules=[fastloader],
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
