"""Builds the compiled search core; all metadata lives in pyproject.toml.

The extension is optional: without a C compiler or the Python headers the build
warns and installs model-place without it (the heuristic placers are pure Python;
``exact`` then raises ``SearchUnavailableError`` and ``auto`` falls back to the best
heuristic). ``MODEL_PLACE_REQUIRE_SEARCH=1`` makes a failed compile fail the build,
as the release wheels require.

Setuptools writes ``src/model_place.egg-info`` and ``build/`` into the source tree by
default (pypa/setuptools#4198); the egg-info, on an editable install's path, even made
model-place appear twice to ``importlib.metadata``. Both go to a temporary folder
instead, removed when the build ends.
"""

import atexit
import os
import shutil
import tempfile

from setuptools import Extension, setup

REQUIRED = os.environ.get("MODEL_PLACE_REQUIRE_SEARCH", "") not in ("", "0")

scratch = tempfile.mkdtemp(prefix="model-place-build-")
atexit.register(shutil.rmtree, scratch, ignore_errors=True)

setup(
    ext_modules=[
        Extension(
            "model_place._search",
            sources=["src/model_place/_search.c", "src/model_place/_skyline.c"],
            depends=["src/model_place/_search.h"],
            # gnu11: _Thread_local and the __atomic builtins (GCC and Clang; not MSVC).
            # -fno-wrapv undoes the -fwrapv of Python's own CFLAGS, which made the search
            # 1.5-2x slower (no integer here may overflow: model_place.exact checks the sums).
            extra_compile_args=["-O2", "-std=gnu11", "-fno-wrapv"],
            optional=not REQUIRED,
        )
    ],
    options={"egg_info": {"egg_base": scratch}, "build": {"build_base": scratch}},
)
