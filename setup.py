"""Builds the optional CPU kernel (transfer_jax/csrc/cpu_kernels.cc, an XLA FFI handler);
everything else is in pyproject.toml. Without a C++ compiler the install still succeeds
and the library runs the same computation in XLA (`transfer_jax.cpu_kernels.available()`)."""
import importlib.util
import os

from setuptools import Extension, setup


def ffi_include_dir() -> str:
    """jaxlib's XLA FFI headers (jaxlib is a build requirement), found without importing it."""
    spec = importlib.util.find_spec("jaxlib")
    return os.path.join(os.path.dirname(spec.origin), "include")


setup(ext_modules=[Extension(
    "transfer_jax._cpu_kernels",
    sources=["transfer_jax/csrc/cpu_kernels.cc"],
    include_dirs=[ffi_include_dir()],
    language="c++",
    extra_compile_args=["-std=c++17", "-O3", "-fopenmp-simd", "-w"],
    optional=True,
)])
