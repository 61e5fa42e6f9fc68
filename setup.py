"""Build hook for the optional compiled hot path (the rest of the project is configured in pyproject.toml).

``embeddix_core/_hits.c`` turns row-cache entries into search hits (see that file for why). It is
optional: without a C compiler the build skips it and the same work runs in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("embeddix_core._hits", ["embeddix_core/_hits.c"], optional=True)])
