"""Build the native core of tokalign.

* ``tokalign._core``: C++17 + pybind11, every ``csrc/*.cpp`` file (kernels, ``bind_<stage>.cpp``
  bindings, ``module.cpp``), -O3, OpenMP when the compiler accepts ``-fopenmp``.
* ``tokalign._cuda``: built by the CUDA section below when ``nvcc`` is found
  (``TOKALIGN_CUDA=0`` forces it off, ``TOKALIGN_CUDA=1`` makes a missing nvcc an error).

Set ``TOKALIGN_NATIVE=1`` to add ``-march=native`` (not portable; off by default).
CUDA switches (docs/cuda.md): ``TOKALIGN_CUDA=0|1``, ``TOKALIGN_CUDA_ARCHS`` (default ``90``: sm_90 +
PTX compute_90), ``TOKALIGN_CUDA_VERBOSE=1`` (nvcc ``-Xptxas -v``), ``NVCC`` / ``CUDA_HOME``.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
except ImportError:  # pip installs pybind11 from build-system.requires; without it only building fails
    Pybind11Extension = None
NO_PYBIND11 = "tokalign: building needs pybind11 (pip install pybind11), normally installed by pip itself."


def _extension(name, sources, **kwargs):
    """A pybind11 extension; without pybind11 a plain placeholder, so that commands that build
    nothing (``setup.py --name``, metadata) still work and BuildExt fails with NO_PYBIND11."""
    if Pybind11Extension is not None:
        return Pybind11Extension(name, sources, **kwargs)
    kwargs.pop("cxx_std", None)
    return Extension(name, sources, **kwargs)


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

    def build_extension(self, ext):
        if getattr(ext, "_tokalign_cuda", False):
            return _build_cuda_extension(self, ext)
        return super().build_extension(ext)

    def build_extensions(self):
        if Pybind11Extension is None:
            raise SystemExit(NO_PYBIND11)
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


# a changed header rebuilds the extensions that include it
HEADERS = sorted(glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join("csrc", "include", "tokalign", "*.h")))

cxx_args = ["-O3", "-std=c++17", "-fvisibility=hidden"]
if os.environ.get("TOKALIGN_NATIVE") == "1":
    cxx_args.append("-march=native")

ext_modules = [
    _extension(
        "tokalign._core",
        sorted(glob.glob(os.path.join("csrc", "*.cpp"))),
        include_dirs=[os.path.join("csrc", "include")],
        cxx_std=17,
        extra_compile_args=cxx_args,
        depends=HEADERS,
    )
]


# ---- CUDA section: tokalign._cuda -------------------------------------------------------------
# The .cu files under csrc/cuda are compiled by nvcc into objects that the C++ units (host code
# csrc/cuda/*_host.cpp and the bindings csrc/cuda/bind_cuda.cpp, which includes csrc/bindings.h;
# ordinary C++ compiler) link with the static CUDA runtime, so the
# module loads without the toolkit's shared libraries. TOKALIGN_CUDA=0 skips it; TOKALIGN_CUDA=1
# makes a missing nvcc or a failed CUDA build an error; otherwise (auto) it is built when nvcc is
# found and skipped with a warning when that build fails.
CUDA_MODE = os.environ.get("TOKALIGN_CUDA", "auto").strip().lower() or "auto"
if CUDA_MODE not in ("0", "1", "auto"):
    sys.exit("tokalign: TOKALIGN_CUDA must be 0, 1 or unset, got %r" % CUDA_MODE)


def _find_nvcc():
    explicit = os.environ.get("NVCC")
    if explicit:
        return explicit if os.path.exists(explicit) or shutil.which(explicit) else None
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


def _cuda_library_dir(nvcc):
    """Folder with libcudart_static.a: CUDA_HOME, next to nvcc, or what ``nvcc --dryrun`` links."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    dirs = [os.path.join(h, sub) for h in homes if h for sub in ("lib64", "lib", "targets/x86_64-linux/lib")]
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60).stderr
        for line in out.splitlines():
            if "LIBRARIES=" in line:
                dirs += [tok.strip('"')[2:] for tok in line.split() if tok.strip('"').startswith("-L")]
    except (OSError, subprocess.SubprocessError):
        pass
    for d in dirs:
        if os.path.exists(os.path.join(d, "libcudart_static.a")):
            return d
    return None


def _nvcc_arch_flags():
    archs = [a.strip() for a in os.environ.get("TOKALIGN_CUDA_ARCHS", "90").replace(",", ";").split(";") if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", "arch=compute_%s,code=sm_%s" % (a, a)]
    top = max(archs, key=int)
    flags += ["-gencode", "arch=compute_%s,code=compute_%s" % (top, top)]  # PTX: JIT on newer GPUs
    return flags


def _compile_cuda_objects(builder, ext):
    nvcc = ext._tokalign_nvcc
    out_dir = os.path.join(builder.build_temp, "tokalign_cuda")
    os.makedirs(out_dir, exist_ok=True)
    flags = ["-std=c++17", "-O3", "-Icsrc/include", "-Icsrc/cuda", "-Xcompiler", "-fPIC,-fvisibility=hidden"]
    flags += _nvcc_arch_flags()
    if os.environ.get("TOKALIGN_CUDA_VERBOSE") == "1":
        flags += ["-Xptxas", "-v"]
    objects = []
    for src in ext._tokalign_cu_sources:
        obj = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".o")
        cmd = [nvcc] + flags + ["-c", src, "-o", obj]
        print("tokalign: " + " ".join(cmd))
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=900)
        if proc.stdout.strip() or proc.stderr.strip():
            print(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError("nvcc failed on %s (exit %d): %s" % (src, proc.returncode,
                                                                    (proc.stderr.strip().splitlines() or ["?"])[-1]))
        objects.append(obj)
    return objects


def _build_cuda_extension(builder, ext):
    try:
        ext.extra_objects = _compile_cuda_objects(builder, ext)
        build_ext.build_extension(builder, ext)
    except Exception as exc:  # nvcc / link failure
        if CUDA_MODE == "1":
            raise SystemExit("tokalign: building tokalign._cuda failed (TOKALIGN_CUDA=1): %s" % exc) from exc
        print("tokalign: WARNING: skipping the optional CUDA extension tokalign._cuda: %s "
              "(set TOKALIGN_CUDA=0 to silence, TOKALIGN_CUDA=1 to make this an error)" % exc)


def _cuda_extension():
    if CUDA_MODE == "0":
        return None
    nvcc = _find_nvcc()
    if nvcc is None:
        if CUDA_MODE == "1":
            sys.exit("tokalign: TOKALIGN_CUDA=1 but nvcc was not found (set NVCC or CUDA_HOME, or put nvcc on PATH)")
        return None
    libdir = _cuda_library_dir(nvcc)
    if libdir is None:
        msg = "found nvcc at %s but no libcudart_static.a (set CUDA_HOME)" % nvcc
        if CUDA_MODE == "1":
            sys.exit("tokalign: TOKALIGN_CUDA=1 but " + msg)
        print("tokalign: WARNING: skipping tokalign._cuda: " + msg)
        return None
    ext = _extension(
        "tokalign._cuda",
        sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp"))),
        include_dirs=["csrc", os.path.join("csrc", "include"), os.path.join("csrc", "cuda")],
        cxx_std=17,
        extra_compile_args=list(cxx_args),
        library_dirs=[libdir],
        libraries=["cudart_static", "rt", "pthread", "dl"],
        depends=HEADERS + sorted(glob.glob(os.path.join("csrc", "cuda", "*"))),
    )
    ext._tokalign_cuda = True
    ext._tokalign_nvcc = nvcc
    ext._tokalign_cu_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    return ext


_cuda_ext = _cuda_extension()
if _cuda_ext is not None:
    ext_modules.append(_cuda_ext)

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
