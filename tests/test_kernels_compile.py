"""Ahead-of-time compile of every Triton kernel for real GPUs (sm_80, sm_90), no GPU needed.

``TRITON_INTERPRET=1`` (used by ``test_sampling_kernel.py``) runs kernels as Python and does
not enforce Triton's compile rules (e.g. no non-constexpr globals inside ``@triton.jit``), so a
kernel can pass every CPU test and still fail to compile on the first CUDA launch. Here each
kernel goes through the real pipeline (ttir -> ttgir -> llir -> ptx -> cubin, the last step by
the ``ptxas`` Triton bundles) in every constexpr variant its launcher uses, with the argument
types and specialisations a real launch produces.

The compiles run in one fresh subprocess (this file run as a script) whose environment has
``TRITON_INTERPRET`` removed: once triton has been imported with the interpreter on, Triton's
own ``@jit`` library functions (``tl.sum``, ``tl.max``, ...) are interpreter wrappers and
nothing can be compiled in that process any more, so deleting the variable here is not enough.
``TRITON_ALLOW_NON_CONSTEXPR_GLOBALS`` is removed too: it would hide exactly the bug this guards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback

import pytest

MODULE = "diffuspeech.sampling.kernels.sampling_triton"
SCRUBBED_ENV = ("TRITON_INTERPRET", "TRITON_ALLOW_NON_CONSTEXPR_GLOBALS")

TARGETS = {"sm80": 80, "sm90": 90}  # CUDA compute capabilities (A100, H100 / H200)
# Largest shared memory a block may use (opt-in), checked by the launcher at the first launch.
MAX_SHARED = {80: 166912, 90: 232448}
DIV16 = [["tt.divisibility", 16]]  # what the launcher attaches to 16-aligned pointers / ints % 16 == 0

# --- _sample_rows_kernel, as launched by sample_rows_triton -------------------------------------
# logits: any float dtype (bf16 on GPU); lo / hi are cast to int64, seed / ids are int64, prob is
# float32; stride_row, V and banned_id are Python ints (i32), temperature a Python float (fp32).
# Constexprs: USE_NOISE = temperature > 0; BLOCK_V = 4096 on CUDA unless block_v is given
# (the interpreter tests use 64; 1024 is the CPU default). num_warps = 8 on CUDA.
_SAMPLE_ROWS_ARGS = [
    # name, signature type ("{logits}" = the logits dtype), can be 16-divisible (pointer or int)
    ("logits_ptr", "*{logits}", True),
    ("stride_row", "i32", True),
    ("lo_ptr", "*i64", True),
    ("hi_ptr", "*i64", True),
    ("seed_ptr", "*i64", True),
    ("ids_ptr", "*i64", True),
    ("prob_ptr", "*fp32", True),
    ("margin_ptr", "*fp32", True),
    ("entropy_ptr", "*fp32", True),
    ("V", "i32", True),
    ("banned_id", "i32", True),
    ("temperature", "fp32", False),  # floats are never specialised
]
_SAMPLE_ROWS_VARIANTS = [
    # (logits dtype, USE_NOISE, WITH_STATS, BLOCK_V, aligned): aligned = every pointer 16-byte aligned
    # and stride_row / V / banned_id multiples of 16 (e.g. V = 128256), unaligned = none of them
    # (e.g. a sliced logits view, V = 300, banned_id = -1). WITH_STATS: margin / entropy samplers.
    *[(dt, noise, False, 4096, aligned) for dt in ("bf16", "fp16", "fp32") for noise in (False, True) for aligned in (True, False)],
    *[("bf16", noise, True, 4096, aligned) for noise in (False, True) for aligned in (True, False)],
    *[("bf16", noise, stats, block, False) for noise in (False, True) for stats in (False, True) for block in (64, 1024)],
]


def _sample_rows_spec(logits: str, use_noise: bool, with_stats: bool, block_v: int, aligned: bool) -> dict:
    signature = {name: ty.format(logits=logits) for name, ty, _ in _SAMPLE_ROWS_ARGS}
    attrs = [[i, DIV16] for i, (_, _, can) in enumerate(_SAMPLE_ROWS_ARGS) if can and aligned]
    constexprs = {"USE_NOISE": use_noise, "WITH_STATS": with_stats, "BLOCK_V": block_v}
    signature.update({name: "constexpr" for name in constexprs})
    vid = f"{logits}-noise{int(use_noise)}-stats{int(with_stats)}-B{block_v}-{'aligned' if aligned else 'unaligned'}"
    return {"id": vid, "signature": signature, "constexprs": constexprs, "attrs": attrs, "options": {"num_warps": 8}}


# kernel name -> its variants (JSON-friendly: they travel to the compile subprocess by name)
SPECS = {
    "_sample_rows_kernel": [_sample_rows_spec(*v) for v in _SAMPLE_ROWS_VARIANTS],
}
CASES = [f"{kernel}-{spec['id']}-{tname}" for kernel, variants in SPECS.items() for spec in variants for tname in TARGETS]


# --- the compile worker (runs in the subprocess) -------------------------------------------------
def _worker(out_path: str) -> None:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    result: dict = {"triton": triton.__version__, "kernels": {}, "cases": {}}
    try:
        result["ptxas"] = triton.knobs.nvidia.ptxas.path  # the bundled one unless TRITON_PTXAS_PATH
    except RuntimeError as e:
        result["no_ptxas"] = str(e)
        json.dump(result, open(out_path, "w"))
        return
    mod = importlib.import_module(MODULE)
    kernels = {name: obj for name, obj in vars(mod).items() if isinstance(obj, JITFunction)}
    for name, fn in kernels.items():
        result["kernels"][name] = {"args": fn.arg_names, "constexprs": [fn.arg_names[i] for i in fn.constexprs]}
    for kernel, variants in SPECS.items():
        for spec in variants:
            for tname, arch in TARGETS.items():
                case: dict = {}
                result["cases"][f"{kernel}-{spec['id']}-{tname}"] = case
                if kernel not in kernels:
                    case["error"] = f"{MODULE} has no @triton.jit kernel {kernel!r}"
                    continue
                t0 = time.perf_counter()
                try:
                    src = ASTSource(
                        fn=kernels[kernel],
                        signature=spec["signature"],
                        constexprs=spec["constexprs"],
                        attrs={(i,): a for i, a in spec["attrs"]},
                    )
                    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=spec["options"])
                    asm = compiled.asm
                    case.update(
                        asm=sorted(asm),
                        num_warps=compiled.metadata.num_warps,
                        shared=compiled.metadata.shared,
                        ptx_target=f".target sm_{arch}" in asm.get("ptx", ""),
                        cubin_bytes=len(asm["cubin"]) if isinstance(asm.get("cubin"), bytes) else 0,
                    )
                except Exception:  # noqa: BLE001 - reported to the test, which fails with it
                    case["error"] = traceback.format_exc()[-4000:]
                case["seconds"] = round(time.perf_counter() - t0, 3)
    json.dump(result, open(out_path, "w"))


# --- the tests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    pytest.importorskip("triton")
    tmp = tmp_path_factory.mktemp("triton-aot")
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["TRITON_CACHE_DIR"] = str(tmp / "cache")  # empty: every variant really compiles
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, str(tmp / "out.json")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp / "out.json").read_text())
    if "no_ptxas" in result:
        pytest.skip(f"triton {result['triton']}: no working ptxas ({result['no_ptxas']})")
    result["wall"] = time.perf_counter() - t0
    return result


def test_every_kernel_has_compile_specs(compiled):
    """A new @triton.jit kernel must get a compile spec here, and the specs must match the kernels."""
    kernels = compiled["kernels"]
    assert set(kernels) == set(SPECS), f"kernels {sorted(kernels)} vs compile specs {sorted(SPECS)}"
    for name, variants in SPECS.items():
        for spec in variants:
            assert list(spec["signature"]) == kernels[name]["args"], (name, spec["id"])
            assert set(spec["constexprs"]) == set(kernels[name]["constexprs"]), (name, spec["id"])


@pytest.mark.parametrize("case", CASES)
def test_kernel_compiles(compiled, case):
    res = compiled["cases"][case]
    assert "error" not in res, f"{case} does not compile:\n{res['error']}"
    arch = TARGETS[case.rsplit("-", 1)[1]]
    assert "ptx" in res["asm"] and "cubin" in res["asm"], res["asm"]
    assert res["ptx_target"], f"PTX not for sm_{arch}"
    assert res["cubin_bytes"] > 0
    assert res["num_warps"] == 8
    assert res["shared"] <= MAX_SHARED[arch], res["shared"]
    print(f"{case}: {res['seconds']:.2f}s")


def test_noise_constants_match_torch_path():
    """The kernel's clamp of the uniform must equal the torch backend's (same Gumbel tail)."""
    pytest.importorskip("triton")
    import importlib

    from diffuspeech.sampling.kernels import sampling

    tri = importlib.import_module(MODULE)
    v_min = getattr(tri._V_MIN, "value", tri._V_MIN)  # a tl.constexpr or a plain float
    assert v_min == sampling._V_MIN


if __name__ == "__main__":  # the compile subprocess
    for _k in SCRUBBED_ENV:
        os.environ.pop(_k, None)
    _worker(sys.argv[1])
