"""Who owns the import package ``mmengine`` here: this project, or OpenMMLab's engine.

This project is published as :data:`DISTRIBUTION` but imports as ``mmengine``. PyPI's ``mmengine``
(and its repackagings such as ``mmengine-lite``) is OpenMMLab's training engine, which any
mmdet / mmseg environment holds and which installs the same import package: installing one into
an environment that has the other overwrites the other's files, and whichever comes first on
``sys.path`` hides the other. This module finds both situations cheaply (one directory listing
per folder, a few small metadata files) for ``mmengine/__init__.py`` at import time and for
``setup.py`` at install time, which loads this file by its path: standard library only, no
package-relative imports.
"""
from __future__ import annotations

import os

#: The distribution name of this project on PyPI (the import name stays ``mmengine``).
DISTRIBUTION = "mmengine-diffusion"
#: How this project's Summary starts: installs made before the rename are named ``mmengine`` too,
#: and they are ours, not a clash.
OUR_SUMMARY = "Training engine for masked-diffusion LMs"
#: Folders only OpenMMLab's package has; one of them inside a ``mmengine`` folder means its files
#: are there (alone, or mixed into ours by installing one over the other).
OPENMMLAB_ONLY = ("registry", "runner", "fileio")


def _normalized(name: str) -> str:
    # PEP 503 normalization, without importing re: "MMEngine_Lite" and "mmengine.lite" -> "mmengine-lite"
    return name.lower().replace("_", "-").replace(".", "-")


def _headers(path: str) -> dict[str, str]:
    """Name / Version / Summary of a METADATA or PKG-INFO file (the header block only)."""
    headers: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, sep, value = line.partition(":")
                if sep and key in ("Name", "Version", "Summary") and key not in headers:
                    headers[key] = value.strip()
    except OSError:
        pass
    return headers


def is_ours(headers: dict[str, str]) -> bool:
    """True for this project's metadata: its distribution name, or the old name with its Summary."""
    name = _normalized(headers.get("Name", ""))
    return name == DISTRIBUTION or (name == "mmengine" and headers.get("Summary", "").startswith(OUR_SUMMARY))


def _installs_mmengine(info_dir: str, headers: dict[str, str]) -> bool:
    if _normalized(headers.get("Name", "")) == "mmengine":
        return True
    for listing, is_top_level in (("top_level.txt", True), ("RECORD", False), ("installed-files.txt", False)):
        try:
            with open(os.path.join(info_dir, listing), encoding="utf-8", errors="replace") as f:
                lines = f.read().split()
        except OSError:
            continue
        if is_top_level:
            return "mmengine" in lines
        return any(line.startswith(("mmengine/", "../mmengine/")) for line in lines)
    return False


def foreign_distributions(folders) -> list[tuple[str, str, str]]:
    """``(name, version, metadata folder)`` of every installed distribution other than this project
    whose metadata lies in one of ``folders`` and which installs the import package ``mmengine``.

    Only ``mmengine*.dist-info`` / ``.egg-info`` entries are read, so a folder costs one listing.
    """
    found = []
    seen = set()
    for folder in folders:
        folder = os.path.realpath(folder or ".")  # "" is the current folder; a folder listed twice counts once
        if folder in seen:
            continue
        seen.add(folder)
        try:
            names = os.listdir(folder)
        except OSError:  # a zip file, a missing folder
            continue
        for entry in sorted(names):
            low = entry.lower()
            if not low.startswith("mmengine") or not low.endswith((".dist-info", ".egg-info")):
                continue
            info_dir = os.path.join(folder, entry)
            headers = _headers(os.path.join(info_dir, "METADATA" if low.endswith(".dist-info") else "PKG-INFO"))
            if headers and not is_ours(headers) and _installs_mmengine(info_dir, headers):
                found.append((headers.get("Name", entry), headers.get("Version", "?"), info_dir))
    return found


def openmmlab_files(package_dir) -> list[str]:
    """The OpenMMLab-only folders (see :data:`OPENMMLAB_ONLY`) inside the folder ``package_dir``."""
    return [name for name in OPENMMLAB_ONLY if os.path.isdir(os.path.join(package_dir, name))]
