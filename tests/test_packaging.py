"""pyproject.toml: the one source of the version, and metadata a current
setuptools builds without deprecation."""

import os
import tomllib

import keras_embed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)


def test_version_is_pyprojects():
    version = project()["project"]["version"]
    assert keras_embed.__version__ == version
    assert version.count(".") == 2 and all(part.isdigit() for part in version.split("."))


def test_license_is_an_spdx_expression():
    # A table ({text = ...}) is deprecated: setuptools refuses it after 2027-02-18.
    # The SPDX string needs setuptools 77 to build.
    config = project()
    assert config["project"]["license"] == "Apache-2.0"
    assert config["project"]["license-files"] == ["LICENSE"]
    assert os.path.isfile(os.path.join(ROOT, "LICENSE"))
    assert config["build-system"]["requires"] == ["setuptools>=77"]
