"""Packaging details pyproject.toml cannot express: the repository's configs/ folder is shipped
inside the package as ``aicore/configs`` (found by aicore/shipped.py), so a plain
``pip install .`` carries every config and ``aicore train -c classification/quickstart`` works
from any directory. Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["aicore", "aicore.*"]) + ["aicore.configs"],
    package_dir={"aicore.configs": "configs"},
)
