"""Build the compiled core: the C sources in csrc/ wrapped by Cython modules."""

import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    raise SystemExit("tesenv needs POSIX shared memory; Windows is not supported")

C_FLAGS = ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall",
           "-Wno-unused-function", "-Wno-unreachable-code"]
INCLUDES = ["csrc", numpy.get_include()]
NUMPY_MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
LIBS = ["rt"] if sys.platform.startswith("linux") else []


def extension(name, sources):
    return Extension(name, sources, include_dirs=INCLUDES,
                     define_macros=NUMPY_MACROS, extra_compile_args=C_FLAGS,
                     libraries=LIBS)


extensions = [
    extension("tesenv._store", ["tesenv/_store.pyx", "csrc/store.c"]),
    extension("tesenv._spline", ["tesenv/_spline.pyx", "csrc/spline.c"]),
    extension("tesenv._telemetry", ["tesenv/_telemetry.pyx"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False,
                             "cdivision": True, "embedsignature": True},
    ),
)
