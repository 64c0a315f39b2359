"""Files in and out for the inference commands (sample, score, classify, the tournament): documents to read,
JSON lines to write."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from mmengine.errors import ArgumentParser, UserError


def read_documents(files: list[str], lines: bool) -> list[tuple[str, str]]:
    """(name, text) per document: each file whole (``-`` = stdin), or each non-empty line with ``lines``."""
    docs = []
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()
        except FileNotFoundError:
            raise UserError(f"{name} does not exist") from None
        except IsADirectoryError:
            raise UserError(f"{name} is a folder, not a text file") from None
        except UnicodeDecodeError:
            raise UserError(f"{name} is not UTF-8 text") from None
        shown = "<stdin>" if name == "-" else name
        if lines:
            docs += [(f"{shown}:{i}", line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        elif text.strip():
            docs.append((shown, text))
        else:
            raise UserError(f"{shown} is empty")
    if not docs:
        raise UserError("no text to read")
    return docs


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """One JSON object per line, written aside and renamed: a reader never sees half a file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"sample.out '{path}' is a folder; give a file name")
    if not path.parent.exists():
        raise UserError(f"sample.out: the folder '{path.parent}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def inference_parser(prog: str, what: str) -> ArgumentParser:
    ap = ArgumentParser(prog=prog, description=what)
    ap.add_argument("checkpoint", help="the model checkpoint (out_dir/ckpt.pt or best.pt)")
    ap.add_argument("files", nargs="+", metavar="FILE", help="text files; - reads stdin")
    ap.add_argument("--lines", action="store_true", help="one document per non-empty line instead of per file")
    ap.add_argument("--out", default="", help="write one JSON object per document to this file")
    ap.add_argument("--data-dir", "--data.dir", dest="data_dir", default="",
                    help="data dir of the model's vocabulary (default: the one stored in the checkpoint)")
    ap.add_argument("--device", default="auto", help="'auto' (CUDA when there is one), 'cpu', 'cuda' or 'cuda:N'")
    return ap
