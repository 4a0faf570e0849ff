"""Build hook for the compiled fast paths (everything else is in pyproject.toml).

Every ``logstream/**/*.pyx`` is compiled with Cython. The extensions are
optional: without Cython or a C compiler logstream installs and runs in pure
Python (each fast path checks for its module at import).
"""

from pathlib import Path

from setuptools import setup

try:
    from Cython.Build import cythonize
except ImportError:  # pure Python install
    ext_modules = []
else:
    sources = sorted(str(path) for path in Path("logstream").rglob("*.pyx"))
    ext_modules = cythonize(sources, compiler_directives={"language_level": "3"}, quiet=True)
    for extension in ext_modules:
        extension.optional = True  # a failed build leaves the pure-Python path

setup(ext_modules=ext_modules)
