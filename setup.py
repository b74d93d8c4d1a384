"""Build the compiled (Cython) kernels of qkdpp.

Every ``src/qkdpp/**/*.pyx`` file becomes an extension module of the same dotted name, so a kernel
author adds a ``_cy.pyx`` next to its ``_ref.py`` and nothing here changes.

Without a working C compiler the build does not fail: it prints a warning and installs the pure
Python package, whose kernels then run on the NumPy reference backend (``QKDPP_BACKEND=reference``
is chosen automatically; ``QKDPP_BACKEND=compiled`` raises a clear error). Set
``QKDPP_REQUIRE_COMPILED=1`` to turn a failed compilation into a failed install instead (CI does).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
SRC = ROOT / "src"
REQUIRE = os.environ.get("QKDPP_REQUIRE_COMPILED", "") not in ("", "0")


def _extensions() -> list:
    try:
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as exc:  # build requirements missing: pure-Python install
        if REQUIRE:
            raise
        print(
            f"qkdpp: WARNING: cannot cythonize ({exc}); installing the reference backend only",
            file=sys.stderr,
        )
        return []
    args = ["-O3"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        args += ["-mpopcnt", "-mpclmul", "-msse4.2"]
    exts = []
    for pyx in sorted(SRC.rglob("*.pyx")):
        module = ".".join(pyx.relative_to(SRC).with_suffix("").parts)
        exts.append(
            Extension(
                module,
                [str(pyx.relative_to(ROOT))],
                include_dirs=[numpy.get_include()],
                extra_compile_args=args,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


class OptionalBuildExt(build_ext):
    """Compile extensions; on a compiler failure fall back to pure Python unless required."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._fallback(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc, ext.name)

    def _fallback(self, exc: BaseException, name: str = "extensions") -> None:
        if REQUIRE:
            raise exc
        print(
            f"qkdpp: WARNING: could not compile {name} ({exc}). qkdpp will run on the slower "
            "NumPy reference backend. Install a C compiler (gcc/clang) and Python headers and "
            "reinstall for the compiled kernels.",
            file=sys.stderr,
        )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
