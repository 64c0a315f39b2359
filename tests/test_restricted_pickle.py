"""The restricted loader: other code's classes become inert data, and no pickle ever runs anything.

Every payload here would write a marker file if any of it were executed; the marker must never appear.
Payloads come two ways: objects whose ``__reduce__`` names a dangerous callable, saved by torch.save at
protocols 0-5 inside a plausible checkpoint, and hand-assembled opcode streams (INST, OBJ, NEWOBJ,
NEWOBJ_EX, STACK_GLOBAL, BUILD) placed as the data.pkl of a torch zip archive.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict

import pytest
import torch

from mmengine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mmengine.model import GPT, GPTConfig
from mmengine.restricted_pickle import (
    InertGlobal,
    InertObject,
    inert_classes,
    restricted_load,
    restricted_loads,
    to_plain,
)

# torch's weights_only pass (tried first by load_checkpoint) warns about protocols other than 2
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a payload ran"


# --- payload objects, pickled by torch.save ---------------------------------------------------------


class SystemPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalPayload(SystemPayload):
    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').write('ran')",)


class ExecPayload(SystemPayload):
    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


class SubprocessPayload(SystemPayload):
    def __reduce__(self):
        return subprocess.check_call, (["touch", self.marker],)


class PopenPayload(SystemPayload):
    def __reduce__(self):
        return subprocess.Popen, (["touch", self.marker],)


class GetattrPayload(SystemPayload):
    def __reduce__(self):
        return getattr, ("text", "upper")  # harmless here, but a pickle that calls getattr is not data


PAYLOADS = {
    "os.system": (SystemPayload, "system"),
    "builtins.eval": (EvalPayload, "eval"),
    "builtins.exec": (ExecPayload, "exec"),
    "subprocess.check_call": (SubprocessPayload, "subprocess.check_call"),
    "subprocess.Popen": (PopenPayload, "subprocess.Popen"),
    "builtins.getattr": (GetattrPayload, "getattr"),
}


def plausible_checkpoint(payload, protocol: int) -> dict:
    """A checkpoint-shaped dict with the payload nested in its config (tensors need protocol >= 2)."""
    model = {"transformer.wte.weight": torch.randn(5, 4), "lm_head.weight": torch.randn(5, 4)} if protocol >= 2 else {}
    return {"model": model, "optimizer": None, "model_args": {"n_layer": 1, "vocab_size": 5}, "iter_num": 3,
            "config": {"stages": [{"type": "random", "hook": payload}]}, "training_context": {"stage": 0}}


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_reduce_payload_is_refused_at_every_protocol(tmp_path, marker, kind, protocol):
    cls, named = PAYLOADS[kind]
    path = tmp_path / "evil.pt"
    torch.save(plausible_checkpoint(cls(marker), protocol), path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError, match=rf"is refused: its pickle calls \S*{named}") as info:
        restricted_load(path)
    assert "\n" not in str(info.value)
    # mmengine's loader: weights_only refuses, the fallback refuses in one sentence, nothing ran
    with pytest.raises(CheckpointError, match=rf"is refused: its pickle calls \S*{named}") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_payload_in_the_legacy_stream_format_is_refused(tmp_path, marker):
    path = tmp_path / "legacy.pt"
    torch.save(plausible_checkpoint(SystemPayload(marker), 2), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="calls posix.system|calls nt.system"):
        restricted_load(path)
    with pytest.raises(CheckpointError, match="is refused"):
        load_checkpoint(path)


# --- hand-assembled opcode streams ---------------------------------------------------------------


def text(s: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data


def glob(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0-3 spelling)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def in_checkpoint(payload: bytes, proto: int = 2) -> bytes:
    """{'model': {}, 'config': <payload>} around the payload's opcodes (the payload leaves one object)."""
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    if proto >= 2:
        return head + b"}(" + text("model") + b"}" + text("config") + payload + b"u."
    return b"(dp0\nS'model'\n(dp1\nsS'config'\n" + payload + b"s."


def stream_payloads(marker) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    return {
        # protocol 0: INST pops the mark, calls os.system(cmd)
        "INST": in_checkpoint(b"(S'" + cmd.encode() + b"'\nios\nsystem\n", proto=0),
        # protocol 1: OBJ calls the class below the mark with the arguments above it
        "OBJ": in_checkpoint(b"(" + glob("os", "system") + b"S'" + cmd.encode() + b"'\no", proto=0),
        # REDUCE at protocol 0 (the classic)
        "REDUCE": in_checkpoint(glob("os", "system") + b"(S'" + cmd.encode() + b"'\ntR", proto=0),
        # protocol 2: NEWOBJ on a class that runs code when constructed
        "NEWOBJ": in_checkpoint(glob("subprocess", "Popen") + b"]" + text("touch") + b"a" + text(str(marker))
                                + b"a\x85\x81"),
        # protocol 4: STACK_GLOBAL + NEWOBJ_EX with keyword arguments
        "NEWOBJ_EX": in_checkpoint(text("subprocess") + text("Popen") + b"\x93" + b"]" + text("touch") + b"a"
                                   + text(str(marker)) + b"a\x85}" + text("shell") + b"\x89s\x92", proto=4),
        "STACK_GLOBAL": in_checkpoint(text("os") + text("system") + b"\x93" + text(cmd) + b"\x85R", proto=4),
        # BUILD on a callable
        "BUILD on a global": in_checkpoint(glob("builtins", "eval") + text(cmd) + b"b"),
        # plant __setstate__ = os.system on an allowed object, then BUILD it with the command
        "BUILD planted __setstate__": in_checkpoint(glob("collections", "OrderedDict") + b")R" + b"}"
                                                    + text("__setstate__") + glob("os", "system") + b"sb"
                                                    + text(cmd) + b"b"),
        # slot state on an allowed object (would setattr)
        "BUILD slot state": in_checkpoint(glob("collections", "OrderedDict") + b")R" + b"N}" + text("__setstate__")
                                          + glob("os", "system") + b"s\x86b"),
        # an allowlisted rebuild asked to do something else
        "codecs other than latin-1": in_checkpoint(glob("_codecs", "encode") + text("x") + text("rot13") + b"\x86R"),
        # a name that is not an identifier
        "odd global name": in_checkpoint(glob("os", "system;x") + text(cmd) + b"\x85R"),
    }


def zip_checkpoint(tmp_path, name: str, data_pkl: bytes):
    """A torch zip archive whose data.pkl is ``data_pkl`` (records copied from a real torch.save)."""
    base = tmp_path / "base.pt"
    torch.save({"a": 1}, base)
    path = tmp_path / name
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else src.read(info))
    return path


@pytest.mark.parametrize("opcode", ["INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "STACK_GLOBAL", "BUILD on a global",
                                    "BUILD planted __setstate__", "BUILD slot state", "codecs other than latin-1",
                                    "odd global name"])
def test_hand_assembled_payloads_are_refused(tmp_path, marker, opcode):
    data = stream_payloads(marker)[opcode]
    # the stream is a valid pickle: the stock unpickler would run it (not done here, of course)
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(data)
    path = zip_checkpoint(tmp_path, "evil.pt", data)
    with pytest.raises(CheckpointError, match=r"is refused: its pickle") as info:
        restricted_load(path)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="is refused"):
        load_checkpoint(path)


def test_the_opcode_streams_are_real_payloads(tmp_path):
    """Guard against testing nothing: the stock unpickler *does* run these streams (with echo, not touch)."""
    probe = tmp_path / "PROBE"
    data = stream_payloads(probe)["STACK_GLOBAL"]
    assert b"touch" in data
    pickle.loads(data.replace(b"\x8c" + bytes([len(f"touch {probe}")]) + f"touch {probe}".encode(),
                              text(f"echo > {probe}")))
    assert probe.exists()


# --- legitimate objects of other code become inert data --------------------------------------------


class UnmaskingStageType(enum.Enum):
    STICKY = "sticky"


@dataclasses.dataclass
class StickyStageConfig:
    val_loss_stale_count: int
    target_masked_ratio: float
    kind: UnmaskingStageType = UnmaskingStageType.STICKY


class Context(dict):
    pass


class History(list):
    pass


@pytest.fixture
def foreign_module():
    """The classes above pickled under the earlier trainer's module name, which is then removed again."""
    module = types.ModuleType("training_utils.training_config")
    for cls in (UnmaskingStageType, StickyStageConfig, Context, History):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    package = types.ModuleType("training_utils")
    package.training_config = module
    sys.modules["training_utils"], sys.modules[module.__name__] = package, module
    yield module
    del sys.modules[module.__name__], sys.modules["training_utils"]
    for cls in (UnmaskingStageType, StickyStageConfig, Context, History):
        cls.__module__ = __name__


@pytest.mark.parametrize("protocol", range(6))
def test_dataclass_enum_and_containers_of_other_code_load_as_inert_data(tmp_path, foreign_module, protocol):
    ctx = Context(stage=1)
    hist = History([1.5, 2.5])
    checkpoint = plausible_checkpoint(None, protocol)
    checkpoint["config"] = StickyStageConfig(6, 0.4)
    checkpoint["model_args"]["mode"] = UnmaskingStageType.STICKY
    checkpoint["training_context"] = {"ctx": ctx, "history": hist, "shape": torch.Size([2, 3]), "tags": {"a"}}
    path = tmp_path / "ok.pt"
    torch.save(checkpoint, path, pickle_protocol=protocol)
    package = sys.modules.pop("training_utils")
    del sys.modules[foreign_module.__name__]  # the loader must not need (or import) it
    try:
        loaded = restricted_load(path)
        assert foreign_module.__name__ not in sys.modules and "training_utils" not in sys.modules
    finally:
        sys.modules["training_utils"], sys.modules[foreign_module.__name__] = package, foreign_module
    config = loaded["config"]
    assert (isinstance(config, InertObject)
            and config.qualified_name == "training_utils.training_config.StickyStageConfig")
    assert to_plain(config) == {"__class__": "training_utils.training_config.StickyStageConfig",
                                "val_loss_stale_count": 6, "target_masked_ratio": 0.4,
                                "kind": {"__class__": "training_utils.training_config.UnmaskingStageType",
                                         "args": ["sticky"]}}
    mode = loaded["model_args"]["mode"]
    assert isinstance(mode, InertObject) and mode.args == ("sticky",)
    tc = to_plain(loaded["training_context"])
    assert tc["ctx"]["items"] == [["stage", 1]] and tc["history"]["list_items"] == [1.5, 2.5]
    assert tc["shape"] == torch.Size([2, 3]) and tc["tags"] == ["a"]
    assert inert_classes(loaded) == ["training_utils.training_config.Context", "training_utils.training_config.History",
                                     "training_utils.training_config.StickyStageConfig",
                                     "training_utils.training_config.UnmaskingStageType"]
    if protocol >= 2:
        torch.testing.assert_close(loaded["model"]["lm_head.weight"], checkpoint["model"]["lm_head.weight"],
                                   rtol=0, atol=0)


def test_tensors_keep_dtype_sharing_and_state_dict_metadata(tmp_path):
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8))
    state = model.state_dict()
    state["half"] = torch.arange(6, dtype=torch.float16).reshape(2, 3).t()  # non-contiguous view
    path = tmp_path / "m.pt"
    torch.save({"model": state, "dtype": torch.bfloat16, "device": torch.device("cpu")}, path)
    loaded = restricted_load(path)
    got = loaded["model"]
    assert got["lm_head.weight"].data_ptr() == got["transformer.wte.weight"].data_ptr()  # tied stays tied
    assert got["half"].dtype == torch.float16 and got["half"].stride() == state["half"].stride()
    torch.testing.assert_close(got["half"], state["half"], rtol=0, atol=0)
    assert hasattr(got, "_metadata") and loaded["dtype"] is torch.bfloat16 and loaded["device"] == torch.device("cpu")


def test_a_reference_to_a_function_is_kept_inert_but_never_callable(tmp_path):
    data = in_checkpoint(glob("os", "system"))
    value = restricted_loads(data)["config"]
    assert isinstance(value, InertGlobal) and value.qualified_name == "os.system" and not callable(value)
    assert to_plain(value) == "os.system"


def test_torchscript_archive_is_refused_without_loading_it(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        restricted_load(path)


def test_mmengine_files_never_reach_the_restricted_loader(tmp_path, monkeypatch):
    import mmengine.restricted_pickle as rp

    path = save_checkpoint(tmp_path / "ckpt.pt",
                           GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)),
                           config={"run": {"seed": 1}})

    def fail(*a, **k):
        raise AssertionError("the restricted loader was used for an mmengine file")

    monkeypatch.setattr(rp, "restricted_load", fail)
    monkeypatch.setattr("mmengine.upstream.restricted_load", fail)
    assert load_checkpoint(path)["config"] == {"run": {"seed": 1}}


def test_foreign_objects_outside_an_earlier_trainer_file_keep_the_safe_loaders_refusal(tmp_path, foreign_module):
    path = tmp_path / "other.pt"
    torch.save({"model": {}, "thing": StickyStageConfig(1, 0.5)}, path)
    with pytest.raises(CheckpointError, match="refused by the safe loader .*StickyStageConfig"):
        load_checkpoint(path)


def test_truncated_file_is_one_sentence(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"model": {"w": torch.zeros(100)}, "config": {}}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        restricted_load(path)


def test_struct_helper_sanity():
    # the assembler above writes SHORT_BINUNICODE with a one-byte length
    assert text("ab") == b"\x8c\x02ab" and struct.calcsize("B") == 1


def test_logging_is_quiet_for_refusals(tmp_path, marker, caplog):
    path = tmp_path / "evil.pt"
    torch.save(plausible_checkpoint(SystemPayload(marker), 2), path)
    with caplog.at_level(logging.INFO, logger="mmengine"), pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not [r for r in caplog.records if "inert data" in r.getMessage()]


def test_ordered_dict_build_only_sets_attributes():
    od = restricted_loads(in_checkpoint(glob("collections", "OrderedDict") + b")R}" + text("_metadata") + b"}sb"))
    assert type(od["config"]) is OrderedDict and od["config"]._metadata == {}


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_pickled_path_in_a_config_is_inert_data(tmp_path, protocol):
    from pathlib import PurePosixPath

    path = tmp_path / "p.pt"
    torch.save({"model": {}, "config": {"out_dir": PurePosixPath("out/run")}}, path, pickle_protocol=protocol)
    value = restricted_load(path)["config"]["out_dir"]
    assert isinstance(value, InertObject) and value.qualified_name == "pathlib.PurePosixPath"
    assert to_plain(value) == {"__class__": "pathlib.PurePosixPath", "args": ["out", "run"]}
