"""Builds the compiled search core; all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "model_place._search",
            sources=["src/model_place/_search.c"],
            extra_compile_args=["-O2", "-std=gnu11"],
        )
    ]
)
