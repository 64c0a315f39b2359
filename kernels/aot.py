"""Ahead-of-time compilation of every kernel configuration, with no GPU.

Each (kernel, launch configuration) the launchers can pick is compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``; the cubin is read back
with the ``cuobjdump`` that ships inside the triton wheel (``--dump-resource-usage``) to get
registers, local memory (register spills) and static shared memory, and Triton's metadata gives
the dynamic shared memory. So a kernel that would not build, would spill, or would ask for more
shared memory than the GPU has is caught on a CPU-only machine.

Must run with ``TRITON_INTERPRET`` unset (under the interpreter ``@triton.jit`` gives
interpreted functions that cannot be compiled), hence the command line form used by the
tests and ``benchmarks/kernel_resources.py``::

    python -m mmengine.kernels.aot [--json] [--arch 80 --arch 90] [--jobs 2]

Triton caches compiled kernels (``TRITON_CACHE_DIR``, default ``~/.triton/cache``), so a
second run only re-reads the cubins.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

# Shared memory a block may use on each target (the opt-in maximum), in bytes.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
DEFAULT_ARCHS = (80, 90)


@dataclass(frozen=True)
class KernelSpec:
    """One compilable kernel instance: which function, with which constants and launch options."""

    module: str  # "rope_attention" or "cross_entropy"
    kernel: str  # attribute name of the @triton.jit function
    label: str  # human-readable configuration
    signature: tuple  # ((arg name, type string), ...) in argument order
    constexprs: tuple  # ((name, value), ...)
    num_warps: int
    num_stages: int
    divisible_args: tuple = ()  # arguments that are multiples of 16 at run time (pointers, strides)


@dataclass
class ResourceUsage:
    kernel: str
    config: str
    target: str
    registers: int
    shared_bytes: int
    local_bytes: int
    stack_bytes: int
    shared_limit: int

    @property
    def ok(self) -> bool:
        # Spilled registers land in the stack frame (STACK) or in local memory (LOCAL): both must be 0.
        return self.local_bytes == 0 and self.stack_bytes == 0 and self.shared_bytes <= self.shared_limit


def _dtype_name(elem_bytes: int) -> str:
    # bf16 stands for the 2-byte types: it is what training uses, and fp16 shares its tiles
    # (at D=128, where both used to be compiled, they differed by at most 4 registers).
    return "bf16" if elem_bytes == 2 else "fp32"


def kernel_specs() -> list[KernelSpec]:
    """Every kernel and every configuration the launchers can choose.

    Attention kernels are compiled causal and not (register allocation differs between the two
    and either may be the one that spills); the 2-byte configurations as bf16, the 4-byte ones
    as fp32.
    """
    # By module path: the package attributes of the same names are the functions, not the modules.
    import importlib

    rope_attention = importlib.import_module("mmengine.kernels.rope_attention")
    cross_entropy = importlib.import_module("mmengine.kernels.cross_entropy")

    specs = []
    for kernel, head_dim, elem_bytes, cfg in rope_attention.all_attention_configs():
        block_m, block_n, warps, stages = cfg
        dt = _dtype_name(elem_bytes)
        for causal in (False, True):
            name = {"fwd": "_attn_fwd", "dkdv": "_attn_bwd_dkdv", "dq": "_attn_bwd_dq"}[kernel]
            ptrs = {"fwd": ["Q", "K", "V", "COS", "SIN", "LENGTHS", "OUT", "LSE"],
                    "dkdv": ["Q", "K", "V", "COS", "SIN", "LENGTHS", "DO", "LSE", "DELTA", "DK", "DV"],
                    "dq": ["Q", "K", "V", "COS", "SIN", "LENGTHS", "DO", "LSE", "DELTA", "DQ"]}[kernel]
            ptype = {"Q": dt, "K": dt, "V": dt, "OUT": dt, "DO": dt, "DK": dt, "DV": dt, "DQ": dt,
                     "COS": "fp32", "SIN": "fp32", "LENGTHS": "i32", "LSE": "fp32", "DELTA": "fp32"}
            third = "o" if kernel == "fwd" else "do"
            outs = {"fwd": (), "dkdv": ("dk", "dv"), "dq": ("dq",)}[kernel]
            strides = [f"stride_{t}{d}" for t in ("q", "k", "v", third) for d in ("b", "h", "t")] + ["stride_ct"]
            strides += [f"stride_{t}{d}" for t in outs for d in ("b", "h", "t")]
            sig = [(p, "*" + ptype[p]) for p in ptrs] + [("sm_scale", "fp32")]
            sig += [(s, "i32") for s in strides] + [("H", "i32"), ("T", "i32")]
            consts = dict(HEAD_DIM=head_dim, HALF_PAD=max(16, head_dim // 2), BLOCK_M=block_m, BLOCK_N=block_n,
                          CAUSAL=causal)
            sig += [(c, "constexpr") for c in consts]
            specs.append(KernelSpec(
                "rope_attention", name,
                f"{dt} D={head_dim} BM={block_m} BN={block_n} w={warps} s={stages}{' causal' if causal else ''}",
                tuple(sig), tuple(consts.items()), warps, stages, tuple(ptrs) + tuple(strides),
            ))
    for head_dim in rope_attention.SUPPORTED_HEAD_DIMS:
        consts = dict(HEAD_DIM=head_dim, BLOCK_M=rope_attention.PREPROCESS_BLOCK_M)
        strides = [f"stride_{t}{d}" for t in ("o", "do") for d in ("b", "h", "t")]
        sig = [("OUT", "*bf16"), ("DO", "*bf16"), ("DELTA", "*fp32")] + [(st, "i32") for st in strides]
        sig += [("H", "i32"), ("T", "i32")] + [(c, "constexpr") for c in consts]
        specs.append(KernelSpec("rope_attention", "_attn_bwd_preprocess",
                                f"bf16 D={head_dim} BM={consts['BLOCK_M']} w=4",
                                tuple(sig), tuple(consts.items()), 4, 1, ("OUT", "DO", "DELTA", *strides)))
    for block_r, block_c, warps in cross_entropy.all_ce_configs():
        for dt in ("bf16", "fp32"):
            consts = dict(BLOCK_R=block_r, BLOCK_C=block_c, HAS_WEIGHT=True, COMPUTE_GRAD=True, MEAN=True)
            sig = [("X", "*" + dt), ("TARGETS", "*i64"), ("WEIGHT", "*fp32"), ("DENOM", "*fp32"),
                   ("LOSS", "*fp32"), ("GRAD", "*" + dt), ("stride_xn", "i32"), ("stride_gn", "i32"),
                   ("N", "i32"), ("C", "i32"), ("ignore_index", "i32")]
            sig += [(c, "constexpr") for c in consts]
            specs.append(KernelSpec("cross_entropy", "_weighted_ce_kernel",
                                    f"{dt} BR={block_r} BC={block_c} w={warps}", tuple(sig), tuple(consts.items()),
                                    warps, 1, ("X", "TARGETS", "WEIGHT", "DENOM", "LOSS", "GRAD")))
    return specs


def cuobjdump_path() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _parse_cuobjdump(text: str, kernel: str) -> dict:
    """REG/STACK/SHARED/LOCAL of ``kernel`` from ``cuobjdump --dump-resource-usage`` output.

    The output lists a ``Function <name>:`` header per kernel followed by its resource line;
    only the line under ``kernel``'s own header is read.
    """
    in_kernel = False
    for line in text.splitlines():
        header = re.match(r"\s*Function (\S+):", line)
        if header:
            in_kernel = header.group(1) == kernel
        elif in_kernel and "REG:" in line:
            fields = dict(re.findall(r"([A-Z]+):(\d+)", line))
            return {k: int(fields.get(k, 0)) for k in ("REG", "STACK", "SHARED", "LOCAL")}
    raise RuntimeError(f"cuobjdump printed no resource line for {kernel}:\n{text}")


def compile_spec(spec: KernelSpec, arch: int) -> ResourceUsage:
    """Compile one spec for sm_<arch> and measure its resources."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("AOT compilation needs TRITON_INTERPRET unset (run `python -m mmengine.kernels.aot`).")
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(f"mmengine.kernels.{spec.module}"), spec.kernel)
    names = [n for n, _ in spec.signature]
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in spec.divisible_args}
    src = ASTSource(fn=fn, signature=dict(spec.signature), constexprs=dict(spec.constexprs), attrs=attrs)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", arch, 32),
        options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / f"{spec.kernel}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        out = subprocess.run([str(cuobjdump_path()), "--dump-resource-usage", str(cubin)],
                             capture_output=True, text=True, check=True).stdout
    res = _parse_cuobjdump(out, spec.kernel)
    return ResourceUsage(
        kernel=spec.kernel, config=spec.label, target=f"sm_{arch}", registers=res["REG"],
        # A block gets its static shared memory (cuobjdump) plus the dynamic amount Triton launches with.
        shared_bytes=res["SHARED"] + int(compiled.metadata.shared), local_bytes=res["LOCAL"],
        stack_bytes=res["STACK"], shared_limit=SHARED_LIMIT[arch],
    )


def _compile_job(args):
    spec, arch = args
    return compile_spec(spec, arch)


def resource_table(archs=DEFAULT_ARCHS, jobs: int | None = None) -> list[ResourceUsage]:
    """Compile every spec for every arch (in ``jobs`` processes) and return their resource usage."""
    work = [(spec, arch) for arch in archs for spec in kernel_specs()]
    jobs = jobs or min(len(work), os.cpu_count() or 1)
    if jobs <= 1:
        return [_compile_job(w) for w in work]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_compile_job, work))


def format_table(rows: list[ResourceUsage]) -> str:
    """Markdown table: kernel, config, target, registers, shared memory, spills."""
    lines = ["| kernel | config | target | registers | shared (KB) | spill: stack + local (B) | ok |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.config} | {r.target} | {r.registers} | {r.shared_bytes / 1024:.1f} "
                     f"| {r.stack_bytes + r.local_bytes} | {'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compile every kernel configuration for sm_80/sm_90 "
                                                 "and print resources.")
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT), help="default: 80 and 90")
    parser.add_argument("--jobs", type=int, default=None, help="compile processes (default: CPU count)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: ahead-of-time compilation cannot run under the interpreter", file=sys.stderr)
        return 2
    rows = resource_table(tuple(args.arch or DEFAULT_ARCHS), args.jobs)
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in rows]))
    else:
        print(format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
