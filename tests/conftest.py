"""Test-session setup that must happen before any kernel module is imported."""
import os
import tempfile

# Triton kernels run on the CPU through the interpreter; the variable is read when
# triton.language is first imported, so it has to be set before anything imports it.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Keep torch.compile's artefacts out of the user's cache and reuse them across tests.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mmengine-inductor-cache")
)
# Tiny models on a shared 2-core machine: spinning OpenMP workers (and the two DDP test processes)
# steal each other's cores; passive waits keep tiny steps fast. Only effective before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope="session")
def char_data_dir(tmp_path_factory):
    """``make(n_chars)``: a char data dir of the first ``n_chars`` characters of the bundled corpus
    (10% validation), prepared once per size for the whole session. Treat it as read-only."""
    from mmengine.data.dataset import bundled_corpus_path
    from mmengine.data.preparation import prepare_text

    made = {}

    def make(n_chars: int = 40_000):
        if n_chars not in made:
            root = tmp_path_factory.mktemp(f"corpus{n_chars}")
            src = root / "small.txt"
            src.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:n_chars], encoding="utf-8")
            prepare_text([src], root / "d", val_fraction=0.1)
            made[n_chars] = root / "d"
        return made[n_chars]

    return make


@pytest.fixture(scope="session")
def nanogpt_char_dir(tmp_path_factory):
    """nanoGPT's ``shakespeare_char`` data dir as its prepare.py writes it: the bundled corpus as uint16
    ids of its 65 sorted characters, 90/10 split, ``meta.pkl`` with vocab_size/itos/stoi (no meta.json)."""
    import pickle

    import numpy as np

    from mmengine.data.dataset import bundled_corpus_path

    text = bundled_corpus_path().read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    path = tmp_path_factory.mktemp("nanogpt") / "shakespeare_char"
    path.mkdir()
    ids[:n].tofile(path / "train.bin")
    ids[n:].tofile(path / "val.bin")
    with open(path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return path
