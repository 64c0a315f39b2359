"""Reading a torch checkpoint that pickles other code's classes, without importing or running any of it.

``torch.load(weights_only=True)`` refuses every class it does not know, which is right for mmengine's own
files but leaves the earlier research trainer's real checkpoints unreadable: they pickle that trainer's
stage dataclass (``training_utils.training_config.StickyStageConfig``) as ``config`` and its
``model.ModelMode`` Enum in ``model_args``. This module reads such files with one rule:

* an **allowlist** of globals is rebuilt for real, each by a function of ours that checks its arguments:
  torch's tensor and parameter rebuilds (storages come from torch's own record reader), ``torch.Size``,
  ``torch.device``, dtypes, ``collections.OrderedDict`` and the builtins pickle itself needs (``set``,
  ``frozenset``, ``complex``, ``slice``, ``range``, ``bytes``/``bytearray``, ``_codecs.encode`` for
  latin-1 text, ``copyreg``'s object rebuilds);
* every other global is never imported: it becomes an :class:`InertGlobal` (its module and name). When
  the pickle *constructs* one whose name reads as a class (``CapWords``, outside the modules that run code:
  ``os``, ``subprocess``, ``builtins``, ...), the result is an :class:`InertObject` holding only the data
  (constructor arguments, state, items), convertible to a dict with :func:`to_plain`;
* calling anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a function of any module)
  through REDUCE, NEWOBJ, NEWOBJ_EX, INST or OBJ, and BUILD on anything but an inert object or an
  OrderedDict, is refused: the load stops with a :class:`~mmengine.checkpoint.CheckpointError` naming
  the global. Nothing was run, either way: refusing only says that such a file is not a checkpoint.

Why ``torch.load(..., pickle_module=...)`` rather than reading the zip records ourselves: torch keeps
owning its record format (storage records, byte order, alignment, ``map_location``, the pre-1.6 stream and
tar formats), and every object the pickle names goes through :meth:`RestrictedUnpickler.find_class` and
our opcode handlers. The unpickler is the pure-Python one (``pickle._Unpickler``) because only there can
the opcodes that call something (REDUCE, NEWOBJ, INST, OBJ, BUILD, ...) be replaced; a data.pkl holds no
tensor bytes, so its speed does not matter. The zip is checked first so that torch never dispatches a
TorchScript archive (which carries code) to ``torch.jit.load``.
"""
from __future__ import annotations

import _compat_pickle
import io
import keyword
import os
import pickle
import types
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

__all__ = ["InertGlobal", "InertObject", "RestrictedUnpickler", "inert_classes", "restricted_load", "to_plain"]

# Modules whose classes (or anything else) a checkpoint never needs to construct: calling into them is
# what a malicious pickle does. Everything not allowlisted stays inert anyway; this list only decides
# which "class-like" names are refused rather than kept as data.
_CODE_MODULES = frozenset({
    "__builtin__", "builtins", "os", "posix", "nt", "sys", "subprocess", "shutil", "importlib", "runpy",
    "pickle", "_pickle", "marshal", "types", "code", "codeop", "ctypes", "_ctypes", "socket", "io", "_io",
    "multiprocessing", "threading", "_thread", "asyncio", "concurrent", "webbrowser", "pty", "signal",
    "tempfile", "zipfile", "tarfile", "urllib", "http", "ftplib", "smtplib", "sqlite3", "shelve", "dbm",
    "inspect", "gc", "weakref", "copyreg", "copy_reg", "pdb", "bdb", "trace", "timeit", "functools",
    "operator", "itertools", "platform", "sysconfig", "site", "ensurepip", "venv", "distutils", "setuptools",
    "pip", "torch", "numpy", "glob", "mmap", "select", "selectors", "ssl", "xmlrpc", "logging",
})


class _Refused(pickle.UnpicklingError):
    """The pickle asked to call or mutate something a checkpoint never needs (message: what it asked)."""


class InertGlobal:
    """A global the pickle named (a class, a function) that was never imported: its module and name only."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    @property
    def qualified_name(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def is_class_like(self) -> bool:
        """Whether constructing it may be kept as data: a CapWords name outside the modules that run code."""
        return self.name.split(".")[-1][:1].isupper() and self.module.split(".")[0] not in _CODE_MODULES

    def __repr__(self) -> str:
        return f"InertGlobal({self.qualified_name})"


class InertObject:
    """An object of a class that was never imported: its class name and the data pickled for it.

    ``args``/``kwargs``: what the pickle passed to the constructor (an Enum member has its value here);
    ``state``: what BUILD gave it (a dataclass's field dict); ``items``/``list_items``: what SETITEMS /
    APPENDS added (a pickled dict or list subclass). :meth:`to_dict` turns it into plain data.
    """

    __slots__ = ("args", "items", "kwargs", "list_items", "module", "name", "state")

    def __init__(self, module: str, name: str, args: tuple = (), kwargs: dict | None = None):
        self.module = module
        self.name = name
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.state: Any = None
        self.items: list[tuple[Any, Any]] = []
        self.list_items: list[Any] = []

    @property
    def qualified_name(self) -> str:
        return f"{self.module}.{self.name}"

    def to_dict(self) -> dict:
        """``{"__class__": "module.Name", ...}``: its state's fields (or ``args``/``kwargs``/``state``), plain."""
        out: dict[str, Any] = {"__class__": self.qualified_name}
        if self.args:
            out["args"] = [to_plain(a) for a in self.args]
        if self.kwargs:
            out["kwargs"] = {str(k): to_plain(v) for k, v in self.kwargs.items()}
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict) and (
                state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **state[1]}  # (__dict__ state, __slots__ state)
        if isinstance(state, dict) and all(isinstance(k, str) for k in state):
            for key, value in state.items():
                out.setdefault(key, to_plain(value))
        elif state is not None:
            out["state"] = to_plain(state)
        if self.items:
            out["items"] = [[to_plain(k), to_plain(v)] for k, v in self.items]
        if self.list_items:
            out["list_items"] = [to_plain(v) for v in self.list_items]
        return out

    def __repr__(self) -> str:
        return f"InertObject({self.qualified_name}, args={self.args!r}, state={self.state!r})"


def to_plain(value: Any) -> Any:
    """``value`` with every inert object turned into a dict, inert globals into their dotted name, scalar
    tensors into Python numbers and OrderedDicts into dicts; other tensors and plain values unchanged."""
    if isinstance(value, InertObject):
        return value.to_dict()
    if isinstance(value, InertGlobal):
        return value.qualified_name
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value
    if isinstance(value, dict):
        return {to_plain(k) if isinstance(k, (InertObject, InertGlobal)) else k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(to_plain(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return sorted((to_plain(v) for v in value), key=repr)
    return value


def inert_classes(value: Any) -> list[str]:
    """Sorted qualified names of every inert object or global inside ``value`` (dicts, lists, tuples)."""
    found: set[str] = set()
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (InertObject, InertGlobal)):
            found.add(item.qualified_name)
        if isinstance(item, InertObject):
            stack.extend([*item.args, *item.kwargs.values(), item.state, *item.list_items])
            stack.extend(v for pair in item.items for v in pair)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return sorted(found)


# -----------------------------------------------------------------------------
# The allowlist: each entry rebuilds one kind of value, after checking what it is given


class _Rebuild:
    """An allowlisted global: ``function(*args, **kwargs)`` checks its arguments and builds the value."""

    __slots__ = ("function", "qualified_name")

    def __init__(self, qualified_name: str, function: Callable):
        self.qualified_name = qualified_name
        self.function = function

    def build(self, args: tuple, kwargs: dict) -> Any:
        try:
            return self.function(*args, **kwargs)
        except _Refused:
            raise
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise _Refused(f"its pickle passes arguments {self.qualified_name} does not take ({exc})") from None

    def __repr__(self) -> str:
        return f"_Rebuild({self.qualified_name})"


class _Base:
    """builtins.object / dict / list: only ever the base-class argument of copyreg._reconstructor."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    @property
    def qualified_name(self) -> str:
        return f"builtins.{self.name}"


_BASES = {name: _Base(name) for name in ("object", "dict", "list")}


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise TypeError(what)


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    _need(isinstance(storage, torch.storage.TypedStorage), "the storage is not one torch read from the file")
    _need(isinstance(storage_offset, int) and _is_int_tuple(tuple(size)) and _is_int_tuple(tuple(stride)),
          "offset, size and stride must be integers")
    _need(isinstance(requires_grad, bool), "requires_grad must be a bool")
    # hooks are never serialised by torch today (Note [Don't serialize hooks]); a callable here would run
    # during backward, so only an empty mapping is accepted
    _need(backward_hooks is None or (isinstance(backward_hooks, dict) and not backward_hooks),
          "backward hooks are not data")
    _need(metadata is None or (isinstance(metadata, dict) and all(isinstance(v, bool) for v in metadata.values())),
          "tensor metadata must be flags")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), requires_grad,
                                           OrderedDict(), metadata or None)


def _rebuild_parameter(data, requires_grad, backward_hooks=None):
    _need(isinstance(data, torch.Tensor) and isinstance(requires_grad, bool), "a parameter is a tensor and a flag")
    _need(backward_hooks is None or (isinstance(backward_hooks, dict) and not backward_hooks),
          "backward hooks are not data")
    return torch.nn.Parameter(data, requires_grad)


def _size(dims=()):
    _need(_is_int_tuple(tuple(dims)), "torch.Size takes integers")
    return torch.Size(tuple(dims))


def _device(kind, index=None):
    _need(isinstance(kind, str) and (index is None or isinstance(index, int)), "torch.device takes a name and an index")
    return torch.device(kind) if index is None else torch.device(kind, index)


def _ordered_dict(pairs=()):
    _need(isinstance(pairs, (list, tuple)), "OrderedDict takes a list of pairs")
    return OrderedDict(pairs)


def _plain_iterable(kind):
    def build(items=()):
        _need(isinstance(items, (list, tuple, set, frozenset)), f"{kind.__name__} takes a list")
        return kind(items)
    return build


def _complex(real=0.0, imag=0.0):
    _need(all(isinstance(v, (int, float)) for v in (real, imag)), "complex takes numbers")
    return complex(real, imag)


def _slice(*args):
    _need(all(v is None or isinstance(v, int) for v in args) and len(args) <= 3, "slice takes integers")
    return slice(*args)


def _range(*args):
    _need(all(isinstance(v, int) for v in args) and 1 <= len(args) <= 3, "range takes integers")
    return range(*args)


def _bytes(data=b"", *encoding):
    # protocols 0-2 write bytes as bytes() or bytes(list of ints), bytearray as bytearray(bytes) or (str, "latin-1")
    if isinstance(data, str):
        return _codecs_encode(data, *encoding)
    _need(isinstance(data, (bytes, bytearray)) or (isinstance(data, list) and all(isinstance(v, int) for v in data)),
          "bytes takes bytes or a list of integers")
    return bytes(data)


def _bytearray(data=b"", *encoding):
    return bytearray(_bytes(data, *encoding))


def _codecs_encode(text, encoding="latin1", errors="strict"):
    # how protocols 0-2 spell a bytes object: its latin-1 text, encoded back
    _need(isinstance(text, str) and encoding in ("latin1", "latin-1") and errors == "strict",
          "_codecs.encode is only accepted for latin-1 text")
    return text.encode("latin1")


def _construct(cls, args=(), kwargs=None) -> Any:
    """What NEWOBJ, REDUCE on a class, INST and OBJ may build: an inert object of a class-like global."""
    if isinstance(cls, InertGlobal) and cls.is_class_like:
        return InertObject(cls.module, cls.name, args, kwargs)
    name = cls.qualified_name if isinstance(cls, (InertGlobal, _Rebuild, _Base)) else type(cls).__name__
    raise _Refused(f"its pickle calls {name}")


def _copyreg_reconstructor(cls, base, state):
    # how protocols 0-1 create an instance of a plain class (base object, state None) or of a dict or
    # list subclass (base dict / list, state its items)
    _need(isinstance(base, _Base), "unexpected base class")
    obj = _construct(cls)
    if base.name == "dict" and isinstance(state, dict):
        obj.items.extend(state.items())
    elif base.name == "list" and isinstance(state, list):
        obj.list_items.extend(state)
    else:
        _need(state is None, f"unexpected state for a {base.name} base")
    return obj


def _copyreg_newobj(cls, *args):
    return _construct(cls, args)


def _copyreg_newobj_ex(cls, args, kwargs):
    _need(isinstance(args, tuple) and isinstance(kwargs, dict), "__newobj_ex__ takes a tuple and a dict")
    return _construct(cls, args, kwargs)


_DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}

_ALLOWED: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): _size,
    ("torch", "device"): _device,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _plain_iterable(set),
    ("builtins", "frozenset"): _plain_iterable(frozenset),
    ("builtins", "complex"): _complex,
    ("builtins", "slice"): _slice,
    ("builtins", "range"): _range,
    ("builtins", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("copyreg", "__newobj__"): _copyreg_newobj,
    ("copyreg", "__newobj_ex__"): _copyreg_newobj_ex,
}


def _is_dotted_name(text: Any) -> bool:
    return isinstance(text, str) and bool(text) and all(
        part.isidentifier() and not keyword.iskeyword(part) for part in text.split("."))


# -----------------------------------------------------------------------------
# The unpickler


class RestrictedUnpickler(pickle._Unpickler):
    """``pickle._Unpickler`` that imports nothing and calls only the allowlist (see the module docstring)."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as the stdlib unpickler maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if not (_is_dotted_name(module) and _is_dotted_name(name)):
            raise _Refused(f"its pickle names a global that is not a dotted name ({module!r}, {name!r})")
        if (module, name) in _ALLOWED:
            return _Rebuild(f"{module}.{name}", _ALLOWED[(module, name)])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if module == "builtins" and name in _BASES:
            return _BASES[name]
        return InertGlobal(module, name)

    def _call(self, func: Any, args: Any, kwargs: Any, opcode: str) -> Any:
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise _Refused(f"its pickle has a malformed {opcode}")
        if isinstance(func, _Rebuild):
            return func.build(args, kwargs)
        try:
            return _construct(func, args, kwargs)
        except _Refused as exc:
            raise _Refused(f"{exc} ({opcode})") from None

    # --- opcodes that call something ---------------------------------------------

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        self.stack[-1] = self._call(func, tuple(args) if isinstance(args, list) else args, {}, "REDUCE")

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, {}, "NEWOBJ"))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, kwargs, "NEWOBJ_EX"))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_inst(self):
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        cls = self.find_class(module, name)
        self.append(self._call(cls, tuple(self.pop_mark()), {}, "INST"))

    dispatch[pickle.INST[0]] = load_inst

    def load_obj(self):
        args = self.pop_mark()
        cls = args.pop(0)
        self.append(self._call(cls, tuple(args), {}, "OBJ"))

    dispatch[pickle.OBJ[0]] = load_obj

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, InertObject):
            inst.state = state
            return
        # torch's state dicts carry their _metadata as OrderedDict instance attributes; nothing else of
        # ours takes state, and never through __setstate__ (a pickle could have planted one)
        if type(inst) is OrderedDict and isinstance(state, dict) and all(isinstance(k, str) for k in state):
            inst.__dict__.update(state)
            return
        name = inst.qualified_name if isinstance(inst, (InertGlobal, _Rebuild, _Base)) else type(inst).__name__
        raise _Refused(f"its pickle applies state to {name} (BUILD)")

    dispatch[pickle.BUILD[0]] = load_build

    # --- container opcodes: an inert dict/list subclass records its items; real containers are only ever
    # the plain ones, so nothing else's __setitem__ / append / update runs ------------------------------

    def load_setitems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if isinstance(target, InertObject):
            target.items.extend(zip(items[::2], items[1::2]))
        elif isinstance(target, dict):
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        else:
            raise _Refused(f"its pickle sets items of a {type(target).__name__} (SETITEMS)")

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, InertObject):
            target.items.append((key, value))
        elif isinstance(target, dict):
            target[key] = value
        else:
            raise _Refused(f"its pickle sets an item of a {type(target).__name__} (SETITEM)")

    def load_appends(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if isinstance(target, InertObject):
            target.list_items.extend(items)
        elif isinstance(target, list):
            target.extend(items)
        else:
            raise _Refused(f"its pickle appends to a {type(target).__name__} (APPENDS)")

    def load_append(self):
        value = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, InertObject):
            target.list_items.append(value)
        elif isinstance(target, list):
            target.append(value)
        else:
            raise _Refused(f"its pickle appends to a {type(target).__name__} (APPEND)")

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise _Refused(f"its pickle adds set items to a {type(target).__name__} (ADDITEMS)")
        target.update(items)

    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.ADDITEMS[0]] = load_additems


def _restricted_pickle_load(file, **kwargs) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# What torch.load(pickle_module=...) reads: Unpickler (subclassed by torch, find_class still ours) and load
# (the legacy format's header records).
_PICKLE_MODULE = types.ModuleType("mmengine.restricted_pickle.module")
_PICKLE_MODULE.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = _restricted_pickle_load  # type: ignore[attr-defined]


def restricted_load(path, map_location="cpu") -> Any:
    """The object pickled in the torch file ``path``, other code's classes kept as inert data.

    Raises :class:`~mmengine.checkpoint.CheckpointError` in one sentence when the pickle calls anything off
    the allowlist (nothing was run), when the file is a TorchScript archive, or when it cannot be read.
    """
    from mmengine.errors import CheckpointError, first_sentence

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            records = {name.split("/", 1)[-1] for name in archive.namelist()}
        if "constants.pkl" in records or any(r.startswith("code/") for r in records):
            raise CheckpointError(f"checkpoint {path} is a TorchScript archive, which carries code; it is not read")
    if os.getenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        raise CheckpointError(f"checkpoint {path} holds objects of other code and TORCH_FORCE_WEIGHTS_ONLY_LOAD "
                              "is set, which forbids reading them even as inert data")
    try:
        with open(path, "rb") as f:
            # an open file (not the path) keeps torch off its safetensors and mmap branches
            return torch.load(f, map_location=map_location, pickle_module=_PICKLE_MODULE, weights_only=False,
                              mmap=False)
    except _Refused as exc:
        raise CheckpointError(f"checkpoint {path} is refused: {exc}, which a checkpoint never needs "
                              "(nothing from the file was run)") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            TypeError, AttributeError, IndexError, AssertionError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read; it is truncated, corrupt or not a torch "
                              f"checkpoint ({first_sentence(exc)})") from None


def restricted_loads(data: bytes) -> Any:
    """A plain pickle (no torch records) read with the same rules; for tests and inspection."""
    return RestrictedUnpickler(io.BytesIO(data)).load()
