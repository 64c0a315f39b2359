"""A run's out_dir: one run at a time, a finished run's history kept, the leftovers of interrupted saves cleaned.

Three rules, so that runs cannot destroy each other or their history:

- **A lock** (:class:`OutDirLock`): ``out_dir/run.lock`` holds the pid, host and start time of the run
  that uses the folder. Exclusion comes from ``flock`` on that file, which the kernel releases however
  the holder ends (even SIGKILL); so a ``run.lock`` that nobody holds was left by a process that is gone,
  and it is taken over with a warning. A second run on a held folder is refused in one sentence.
- **History** (:class:`RunDir`): a new (scratch) run in a folder that holds a run (``ckpt.pt``,
  ``best.pt`` or a non-empty ``metrics.jsonl``) is refused unless ``run.overwrite=true``; even then the earlier run's
  ``metrics.jsonl`` and ``best.pt`` stay until the new run has written its first ``ckpt.pt``: until then
  the new run logs into ``.metrics.<run id>.jsonl``, which replaces ``metrics.jsonl`` right after that
  save. A kill in between leaves the earlier run complete (and its ``ckpt.pt`` resumable).
- **Leftovers**: temporary files of saves that a kill or a full disk interrupted (``.ckpt.pt.*.tmp``, up
  to a checkpoint's size each), half-written metrics and plots, and the pending history of runs that died
  before their first checkpoint, are removed when the next run takes the lock (nobody else can be
  writing them then).

Only rank 0 touches the folder; the trainer shares the outcome with the other ranks.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

from mmengine.errors import TrainingError, UserError
from mmengine.memory import format_bytes

logger = logging.getLogger(__name__)

__all__ = ["HISTORY", "LOCK_NAME", "OutDirLock", "RunDir", "check_out_dir", "disk_full", "disk_full_error",
           "stale_leftovers"]

LOCK_NAME = "run.lock"
#: Files that make a folder "hold a run": a new scratch run would replace them.
HISTORY = ("ckpt.pt", "best.pt", "metrics.jsonl")
METRICS = "metrics.jsonl"

# What interrupted writes of a run leave behind (names made by checkpoint.save_checkpoint's mkstemp,
# RunLogger's rewrite of metrics.jsonl and its plots, and RunDir's pending history).
_LEFTOVER = re.compile(r"^(\.[^/]+\.pt\.[A-Za-z0-9_]+\.tmp"  # .ckpt.pt.k3j_x9a2.tmp
                       r"|metrics\.jsonl\.tmp|curves\.tmp\.png"
                       r"|\.metrics\.[0-9a-f]+\.jsonl)$")  # a pending history

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows): the pid check below is then the only guard
    fcntl = None  # type: ignore[assignment]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    if not isinstance(started, (int, float)):
        return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    when = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{when}"


class OutDirLock:
    """Exclusive use of a folder by one process, with who holds it written inside (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict | None = None  # the holder of a stale lock this one replaced

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = json.loads(os.read(fd, 4096).decode("utf-8", "replace") or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def acquire(self) -> None:
        """Take the lock or raise :class:`UserError` naming the run that holds it. The folder must exist."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
                holder = self._read(fd)
                if locked is None:  # no flock here: a live process of this host named in the file holds it
                    pid = holder.get("pid")
                    locked = not (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                                  and pid != os.getpid() and _alive(pid))
                if not locked:
                    raise UserError(f"{self.folder} is in use by another run ({_describe(holder)}); wait for it to "
                                    f"finish or pick another run.out_dir (it holds {self.path}).")
                # the holder before us unlinks the file before it lets go: a lock on a file that is no longer
                # at this path protects nothing, so start again with the file that is there now
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        self.took_over = holder or None
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)[:500]}
        text = (json.dumps(mine) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, text)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # ours now (flock held): no empty lock file left behind
            os.close(fd)
            if disk_full(e):
                raise disk_full_error(self.path, len(text)) from None
            raise
        self._fd = fd

    @staticmethod
    def _flock(fd: int) -> bool | None:
        """True when this process now holds the lock, False when another does, None without flock."""
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        return True

    def release(self) -> None:
        """Remove the file, then let go (a run waiting on this file sees it gone and retries)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def disk_full(exc: BaseException | None) -> bool:
    """A full disk or quota anywhere in ``exc``'s chain (torch.save reports one as a RuntimeError whose context is
    the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path: Path, needed: int, *, kept: str = "the last checkpoint is intact") -> TrainingError:
    """The one sentence for a write of ``needed`` bytes to ``path`` that found the disk full (exit 1)."""
    try:
        free = f"{format_bytes(shutil.disk_usage(Path(path).parent).free)} free there"
    except OSError:
        free = "the free space there is unknown"
    return TrainingError(f"the disk is full: writing {path} needs about {format_bytes(needed)} ({free}); {kept}; free "
                         "some space and run again (--run.init_from=resume continues from the last checkpoint).")


#: Folders of pseudo file systems, where a run's files can never be written.
_PSEUDO_FS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_out_dir(out_dir: str | Path) -> None:
    """Raise :class:`UserError` unless ``out_dir`` is a folder or can be made one (not a file, not under /proc)."""
    path = Path(out_dir).expanduser().absolute()
    for root in _PSEUDO_FS:
        if path == root or root in path.parents:
            raise UserError(f"run.out_dir '{out_dir}' lies in {root}, a pseudo file system that cannot hold a run's "
                            "files; pick a folder on a disk.")
    for folder in (path, *path.parents):  # the nearest part that exists decides
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == path else f"lies under '{folder}', which is a file"
                raise UserError(f"run.out_dir '{out_dir}' {what}, not a folder; pick a folder for the run's outputs.")
            if folder != path and not os.access(folder, os.W_OK | os.X_OK):
                raise UserError(f"run.out_dir '{out_dir}' cannot be created: no permission to write in '{folder}'.")
            return


def stale_leftovers(folder: Path, keep: set[str] = frozenset()) -> list[Path]:
    """Files in ``folder`` that interrupted writes of runs leave behind (names in ``keep`` excepted)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _LEFTOVER.match(p.name) and p.name not in keep and p.is_file())


class RunDir:
    """The out_dir of one run on rank 0: lock, history policy, leftovers; a trainer component.

    ``claim()`` (lock + refusal) comes before anything is printed or written; ``prepare()`` before the
    logs open; ``saved(path)`` after every checkpoint save; ``release()`` at the end, whatever happened.
    Its state, the run id, goes into checkpoints so that a resume finds its own pending history.
    """

    def __init__(self, out_dir: str | Path, *, resume: bool, overwrite: bool, enabled: bool = True):
        self.path = Path(out_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.enabled = enabled
        self.run_id = uuid.uuid4().hex[:16]
        self.lock = OutDirLock(self.path)
        self.pending: Path | None = None  # this run's metrics until its first checkpoint replaces the history
        self._created: list[Path] = []  # folders claim() made, removed again when the run fails before writing

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict) -> None:
        run_id = state.get("run_id") if isinstance(state, dict) else None
        if isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]+", run_id):
            self.run_id = run_id

    def history(self) -> list[str]:
        """The names of HISTORY present in the folder (an empty metrics.jsonl, of a run stopped while it started,
        does not count)."""
        found = []
        for name in HISTORY:
            try:
                size = (self.path / name).stat().st_size
            except FileNotFoundError:
                continue
            if size > 0 or name != METRICS:
                found.append(name)
        return found

    def claim(self) -> None:
        """Create the folder if needed, take its lock, and refuse a scratch run over an earlier run's history."""
        if not self.enabled:
            return
        check_out_dir(self.path)
        missing = []
        for folder in (self.path, *self.path.parents):
            if folder.exists():
                break
            missing.append(folder)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run.out_dir '{self.path}': {e.strerror or e}.") from None
        self._created = missing
        try:
            try:
                self.lock.acquire()
            except OSError as e:  # e.g. a folder this user may not write in
                raise UserError(f"cannot write in run.out_dir '{self.path}': {e.strerror or e}.") from None
            found = self.history()
            if found and not self.resume and not self.overwrite:
                raise UserError(f"{self.path} holds an earlier run ({', '.join(found)}); continue it with "
                                "--run.init_from=resume, replace it with --run.overwrite=true (its history is kept "
                                "until the new run's first checkpoint), or pick another --run.out_dir.")
        except BaseException:
            self.release(failed=True)
            raise

    def prepare(self) -> Path:
        """Clean leftovers, finish a history swap a kill interrupted, say what happens; the metrics file to write."""
        if not self.enabled:
            return self.path / METRICS
        took_over = self.lock.took_over
        if took_over:
            logger.warning("%s was left by a run that is no longer running (%s); this run took it over",
                           self.lock.path, _describe(took_over))
        own = f".metrics.{self.run_id}.jsonl"
        if self.resume and (self.path / own).is_file():
            # the run saved its first checkpoint and was killed before its history replaced the earlier one
            self._swap_history(self.path / own)
        leftovers = stale_leftovers(self.path)
        if leftovers:
            total = 0
            for p in leftovers:
                with contextlib.suppress(FileNotFoundError):
                    total += p.stat().st_size
                    p.unlink()
            names = ", ".join(p.name for p in leftovers[:4]) + (", ..." if len(leftovers) > 4 else "")
            logger.info("removed %d leftover file(s) of interrupted saves in %s (%s): %s", len(leftovers), self.path,
                        format_bytes(total), names)
        found = self.history()
        if not self.resume and found:
            self.pending = self.path / own
            logger.warning("run.overwrite=true: this run replaces the earlier run in %s; its %s stay until this run's "
                           "first checkpoint", self.path, ", ".join(found))
            return self.pending
        return self.path / METRICS

    def saved(self, path: Path) -> Path | None:
        """After a checkpoint save: at the first ``ckpt.pt``, the new history replaces the earlier run's.

        Returns the metrics file's new path when it moved (the open file handle follows the rename).
        """
        if self.pending is None or Path(path).name != "ckpt.pt":
            return None
        return self._swap_history(self.pending)

    def _swap_history(self, pending: Path) -> Path:
        # best.pt first: until the rename below a pending file marks best.pt as the earlier run's
        with contextlib.suppress(FileNotFoundError):
            (self.path / "best.pt").unlink()
        target = self.path / METRICS
        os.replace(pending, target)
        self.pending = None
        logger.info("the earlier run's history in %s is replaced by this run's", self.path)
        return target

    def release(self, *, failed: bool = False) -> None:
        """Let go of the lock; a run that failed before writing anything leaves no folder behind."""
        self.lock.release()
        if failed:
            for folder in self._created:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break
            self._created = []
