"""`pip install .` works from a clean clone with build isolation, and the wheel holds the extension,
the bundled corpus and mmengine.kernels (never a bare kernels/). The distribution is named
mmengine-diffusion, and OpenMMLab's mmengine (the same import package) is detected at import and
at install time."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from mmengine import _distribution

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _clean_clone(dst: Path) -> None:
    """The files a fresh clone would have (git-tracked, with their working-tree contents), so
    that the build sees neither build artefacts nor files that were never committed."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files a clean clone holds")
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # (a tracked file deleted in the working tree is skipped)
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


# pip's words when the isolated build environment cannot be fetched (no index reachable)
_OFFLINE = ("No matching distribution found for setuptools", "Could not find a version that satisfies",
            "Failed to establish a new connection", "Temporary failure in name resolution")


@pytest.mark.slow
def test_wheel_from_clean_clone_with_build_isolation(tmp_path):
    """`pip install .` builds exactly this wheel: in an isolated build environment holding only
    pyproject.toml's build requirements (so no numpy or torch at build time), from the files of
    a clean clone."""
    src = tmp_path / "src"
    _clean_clone(src)
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(wheels)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0 and any(s in proc.stdout + proc.stderr for s in _OFFLINE):
        pytest.skip("no package index reachable for the isolated build environment")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = wheels.glob("mmengine_diffusion-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    headers = zipfile.ZipFile(wheel).read(metadata).decode().split("\n\n")[0].splitlines()
    assert "Name: mmengine-diffusion" in headers and any(h.startswith("Summary: " + _distribution.OUR_SUMMARY)
                                                         for h in headers)
    assert any(n.startswith("mmengine/_fastloader") and n.endswith((".so", ".pyd")) for n in names), names
    assert "mmengine/assets/tinyshakespeare.txt" in names
    assert "mmengine/kernels/__init__.py" in names
    assert "mmengine/data/fastloader.py" in names
    top_level = {n.split("/", 1)[0] for n in names}
    assert "kernels" not in top_level, sorted(top_level)
    assert not any(n.startswith(("csrc/", "tests/", "benchmarks/")) for n in names)


# --- the name: mmengine-diffusion, and the clash with OpenMMLab's mmengine --------------------------


def test_distribution_name_is_our_own_and_consistent():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == _distribution.DISTRIBUTION == "mmengine-diffusion"
    # an install made before the rename is recognised as ours by this prefix of its Summary
    assert project["description"].startswith(_distribution.OUR_SUMMARY)
    readme = (ROOT / "README.md").read_text()
    assert "mmengine-diffusion" in readme and "OpenMMLab" in readme


OPENMMLAB_METADATA = "Metadata-Version: 2.1\nName: {name}\nVersion: 0.10.7\nSummary: {summary}\n\nlong text\n"


def _fake_distribution(site: Path, name: str, *, summary="Engine of OpenMMLab projects", top_level=None, record=None,
                       egg=False) -> Path:
    """A dist-info (or egg-info) folder as pip (or setuptools develop) leaves it, without the package files."""
    info = site / f"{name.replace('-', '_')}-0.10.7.{'egg-info' if egg else 'dist-info'}"
    info.mkdir(parents=True)
    (info / ("PKG-INFO" if egg else "METADATA")).write_text(OPENMMLAB_METADATA.format(name=name, summary=summary))
    if top_level is not None:
        (info / "top_level.txt").write_text(top_level + "\n")
    if record is not None:
        (info / "RECORD").write_text("".join(f"{line},sha256=x,1\n" for line in record))
    return info


def _import_mmengine(site: Path, code="import mmengine; print(mmengine.__file__)", *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, *args, "-c", code], check=False, capture_output=True, text=True,
                          env=env, cwd=site, timeout=120)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mmengine", {}),  # PyPI's mmengine: OpenMMLab's
        ("mmengine", {"egg": True}),  # an old `setup.py develop` of it
        ("mmengine-lite", {"top_level": "mmengine"}),  # a repackaging that installs the same import package
        ("mmengine-open", {"record": ["mmengine/__init__.py", "mmengine/registry/__init__.py"]}),
    ],
)
def test_import_says_so_in_one_line_where_openmmlab_mmengine_is_installed(tmp_path, name, kwargs):
    info = _fake_distribution(tmp_path / "site", name, **kwargs)
    proc = _import_mmengine(tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(ROOT / "mmengine")  # ours was imported, and works
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{info}:0: PackageClashWarning: {name} 0.10.7 is installed here too")
    assert "same import package mmengine as this project (mmengine-diffusion)" in lines[0]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mmengine", {"summary": _distribution.OUR_SUMMARY + ", token classifiers and ..."}),  # ours, old name
        ("mmengine-diffusion", {"summary": "anything"}),  # ours
        ("mmengine-config", {"top_level": "mmengine_config"}),  # another import package
        ("mmengine-tools", {"record": ["mmengine_tools/__init__.py"]}),
    ],
)
def test_import_is_silent_for_our_own_and_unrelated_distributions(tmp_path, name, kwargs):
    _fake_distribution(tmp_path / "site", name, **kwargs)
    proc = _import_mmengine(tmp_path / "site", "import mmengine", "-W", "error")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def _mixed_install(site: Path) -> Path:
    """Our package with OpenMMLab's files in it, as `pip install` of one over the other leaves it."""
    package = site / "mmengine"
    package.mkdir(parents=True)
    for name in ("__init__.py", "_distribution.py"):
        shutil.copy2(ROOT / "mmengine" / name, package / name)
    (package / "registry").mkdir()
    (package / "registry" / "__init__.py").write_text("")
    return package


def test_import_refuses_openmmlab_files_mixed_into_ours(tmp_path):
    package = _mixed_install(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = subprocess.run([sys.executable, "-c", "import mmengine"], check=False, capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(f"ImportError: the mmengine package in {package} also holds "
                                                   "OpenMMLab's mmengine files (registry/)")
    # a command says it in one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "mmengine.prepare", "in.txt", "--out", "out"], check=False,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert (proc.stderr.startswith("error: the mmengine package in")
            and "pip uninstall mmengine mmengine-diffusion" in proc.stderr)


@pytest.mark.slow
def test_install_stops_in_one_line_where_openmmlab_mmengine_is_installed(tmp_path):
    """`pip install -e .` into an environment holding OpenMMLab's mmengine (a fake dist-info) stops before
    building, with our one line, and installs nothing. The environment is a venv that sees this
    interpreter's packages (pip, setuptools, pybind11) through a .pth file; --no-build-isolation keeps the
    test offline."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    info = _fake_distribution(site, "mmengine")
    src = tmp_path / "src"
    _clean_clone(src)
    before = sorted(p.name for p in site.iterdir())
    proc = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e",
                           str(src)], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    ours = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "OpenMMLab" in line]
    assert ours == [(
        f"error: this environment holds OpenMMLab's mmengine (mmengine 0.10.7 at {info}), which installs the same "
        "import package mmengine as mmengine-diffusion; installing here would overwrite its files: use a separate "
        "environment (or `pip uninstall mmengine` first if you no longer need it)"
    )]
    assert sorted(p.name for p in site.iterdir()) == before  # nothing installed
