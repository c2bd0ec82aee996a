"""openmm-arbg: Autoregressive Boltzmann Generators for OpenMM."""

import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "openmm_arbg", "__init__.py")) as f:
    version = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)
with open(os.path.join(here, "README.md")) as f:
    long_description = f.read()

setup(
    name="openmm-arbg",
    version=version,
    description="Autoregressive Boltzmann Generators as exact Metropolis-Hastings moves and importance samplers for OpenMM",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["openmm_arbg", "openmm_arbg.*"]),
    package_data={"openmm_arbg.pretrained": ["*.safetensors", "*.json"]},
    python_requires=">=3.10",
    install_requires=[
        "openmm>=8.5",
        "openmmtools>=0.24",
        "mdtraj>=1.10",
        "pymbar>=4.0",
        "torch>=2.2",
        "numpy>=1.24",
        "scipy>=1.10",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "netcdf4>=1.6",
        "peptidebuilder>=1.1",
        "pot>=0.9",
        "deeptime>=0.4",
        "matplotlib>=3.7",
    ],
    entry_points={"console_scripts": ["arbg=openmm_arbg.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Chemistry",
    ],
)
