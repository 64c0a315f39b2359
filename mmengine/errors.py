"""One error family for the whole engine, and the one entry helper every ``python -m mmengine.*`` command uses.

Every mistake a user can make (a bad config value, a missing data dir, a checkpoint that does not fit)
raises a subclass of :class:`MMEngineError` whose message is one sentence naming what is wrong. The
command-line entry points run through :func:`cli_entry`, which prints that sentence on stderr and
exits with 2 (1 when a run fails after it started, 130 on Ctrl-C): never a traceback for an ordinary
mistake. Library callers catch ``MMEngineError`` (it is a ``ValueError``, so older ``except ValueError``
code keeps working).

No torch and no numpy here: the numpy-only loader and the data modules import this too.
"""
from __future__ import annotations

import argparse
import errno
import logging
import re
import sys
from typing import Callable, NoReturn

__all__ = [
    "MMEngineError",
    "ConfigError",
    "UserError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "ArgumentParser",
    "first_sentence",
    "cli_entry",
]


class MMEngineError(ValueError):
    """Base of every error whose message is meant for the user as it is (one sentence)."""

    exit_code = 2


class ConfigError(MMEngineError):
    """A configuration mistake: an unknown key, a wrong type, an impossible combination."""


class UserError(MMEngineError):
    """Any other mistake found while starting a command (bad data dir, bad checkpoint, bad argument)."""


class DataError(MMEngineError):
    """A data dir or one of its files is missing or malformed."""


class CheckpointError(MMEngineError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model asked of it."""


class TrainingError(MMEngineError):
    """A run that started cannot go on (e.g. a non-finite loss); the message names the iteration."""

    exit_code = 1


def first_sentence(exc: BaseException) -> str:
    """The first sentence of a library error (torch appends paragraphs of advice)."""
    # C++ errors open with "[enforce fail at file.cc:123] . "
    text = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(exc).strip())
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes raise :class:`ConfigError` (one line via :func:`cli_entry`), not usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())  # one line, whatever the message held
    return text if text.endswith((".", "?", "!")) else text + "."


def cli_entry(main_fn: Callable[[list[str]], int | None], argv: list[str] | None, prog: str,
              help_text: Callable[[], str] | None = None) -> int:
    """Run ``main_fn(args)`` as the command ``prog`` and return its exit status.

    ``-h``/``--help`` print ``help_text()`` when one is given (commands built on argparse print their
    own). :class:`MMEngineError` -> ``error: <sentence>`` on stderr, exit 2 (1 for a failed run);
    a full disk -> one line, exit 1; Ctrl-C -> ``interrupted``, exit 130.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if help_text is not None and ("-h" in args or "--help" in args):
        print(help_text())
        return 0
    try:
        return main_fn(args) or 0
    except MMEngineError as e:
        print(f"error: {_sentence(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: the disk is full{where}; free some space and run again "
              "(earlier files are intact).", file=sys.stderr)
        return 1


def quiet_library_logging(level: int = logging.WARNING) -> None:
    """Plain ``message`` lines on stderr for commands that only print a result."""
    logging.basicConfig(level=level, format="%(message)s")
