"""Builds mmengine and its C++ extension ``mmengine._fastloader``.

Metadata lives in pyproject.toml; this file only describes what setuptools cannot
express there: the pybind11 extension and the top-level ``kernels/`` folder, which
is installed as the ``mmengine.kernels`` subpackage (never as a bare ``kernels``).
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

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
