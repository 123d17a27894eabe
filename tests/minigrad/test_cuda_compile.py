"""Every CUDA kernel compiles, for Ampere (compute_80) and Hopper (compute_90), in float and
double, with NVRTC called directly: this needs neither a GPU nor a driver (CuPy's own
compile path asks the driver for the architecture, so it cannot run here). A syntax or type
error in any kernel fails this test."""
import platform
import sys

import pytest

from minigrad.cuda import sources

if not (sys.platform == "linux" and platform.machine() == "x86_64"):
    pytest.skip("NVRTC wheels (nvidia-cuda-nvrtc-cu12) exist for Linux x86-64 only", allow_module_level=True)

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy is not installed")


def compile_source(arch, c_type):
    program = nvrtc.createProgram(sources.source(), "minigrad.cu", [], [])
    try:
        names = [f"{name}<{c_type}>" for name in sources.templated_kernels()]
        for name in names:
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", *sources.OPTIONS])
        except nvrtc.NVRTCError:
            pytest.fail(f"{arch} {c_type}:\n{nvrtc.getProgramLog(program)}")
        lowered = [nvrtc.getLoweredName(program, name) for name in names]
        return nvrtc.getPTX(program), lowered
    finally:
        nvrtc.destroyProgram(program)


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("c_type", ["float", "double"])
def test_every_kernel_compiles(arch, c_type):
    ptx, lowered = compile_source(arch, c_type)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert len(lowered) == len(sources.templated_kernels()) >= 20
    for name in list(lowered) + list(sources.plain_kernels()):
        assert f".entry {name}(" in ptx, f"{name} missing from the PTX"


def test_a_broken_kernel_fails_to_compile():
    """The check can fail: NVRTC rejects a type error."""
    program = nvrtc.createProgram('extern "C" __global__ void f(float* x) { x[0] = undefined_name; }',
                                  "broken.cu", [], [])
    with pytest.raises(nvrtc.NVRTCError):
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_80"])
    assert "undefined_name" in nvrtc.getProgramLog(program)
    nvrtc.destroyProgram(program)
