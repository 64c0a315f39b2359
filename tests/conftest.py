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
