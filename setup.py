"""Build daskgmm's compiled core: one extension module per ISA variant of the same C++ source.

x86-64 gets ``_core_avx512`` (AVX-512 F/DQ/BW/VL + FMA), ``_core_avx512_256`` (the same on 256-bit
vectors with 32 registers, for CPUs that split 512-bit operations), ``_core_avx2`` (AVX2 + FMA) and
``_core_baseline`` (the platform's baseline, SSE2); any other machine (aarch64 ...) gets
``_core_generic``, compiled with the platform's defaults. ``daskgmm.kernels.compiled`` picks
the best variant the CPU runs at import, as NumPy does. A variant that fails to compile is
left out, and without a working C++ compiler the package installs without any: every pass
then runs the NumPy reference (``daskgmm.show_config()`` says why).
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "daskgmm/kernels/_core.cpp"

if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
    VARIANTS = {
        "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
        # the same instructions on 256-bit vectors with 32 registers (chosen on AMD Zen 4)
        "avx512_256": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma",
                       "-DDASKGMM_AVX512_256"],
        "avx2": ["-mavx2", "-mfma"],
        "baseline": [],
    }
else:
    VARIANTS = {"generic": []}

# -fno-wrapv: Python's own CFLAGS (sysconfig), which setuptools puts first, have -fwrapv; the core
# does not rely on signed overflow wrapping, and with it GCC 12 made the k-means pass ~5% slower.
COMMON = ["-O3", "-std=c++17", "-ffp-contract=fast", "-fno-math-errno", "-fvisibility=hidden", "-fno-wrapv"]


def _extension(name, isa):
    return Extension(
        f"daskgmm.kernels._core_{name}",
        sources=[SOURCE],
        depends=[SOURCE],
        language="c++",
        define_macros=[("DASKGMM_VARIANT", name), ("DASKGMM_FLAGS", " ".join(isa) or "baseline")],
        extra_compile_args=COMMON + isa,
    )


class OptionalBuildExt(build_ext):
    """Build what compiles; a missing or failing compiler leaves the NumPy path, never a failed install."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:  # the variants are independent: one compiler per core
            self.parallel = os.cpu_count() or 1

    def run(self):
        # every variant compiles the one source, and distutils names an object after its source: built
        # in parallel, the variants wrote and linked the same object file (a variant could link another's
        # object, or a half-written one). Each compiles a source of its own that includes the shared one.
        for ext in self.extensions:
            wrapper = os.path.join(self.build_temp, "variants", ext.name.rsplit(".", 1)[-1] + ".cpp")
            os.makedirs(os.path.dirname(wrapper), exist_ok=True)
            with open(wrapper, "w") as f:
                f.write(f'#include "{os.path.abspath(SOURCE)}"\n')
            ext.sources = [wrapper]
        try:
            super().run()
        except Exception as exc:  # no compiler at all (distutils raises its own error types)
            self._skipped("every variant", exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(ext.name, exc)

    def _skipped(self, what, exc):
        if os.environ.get("DASKGMM_REQUIRE_COMPILED"):
            raise exc
        print(f"daskgmm: not building {what} of the compiled core ({type(exc).__name__}: {exc}); "
              "passes will use the NumPy path", file=sys.stderr)


setup(
    ext_modules=[_extension(name, isa) for name, isa in VARIANTS.items()],
    cmdclass={"build_ext": OptionalBuildExt},
)
