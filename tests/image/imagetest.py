"""Helpers of the image tests (a module of its own: conftest.py files cannot be imported reliably)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jailyard.imagebuild import Recipe, host_mirror

# The role's default cache: a machine (or CI) downloads the packages once.
CACHE = Path(os.environ.get("JAILYARD_DEBOOTSTRAP_CACHE", "/var/cache/jailyard/debootstrap"))


def needs_root_and_debootstrap() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path("/usr/sbin/debootstrap").exists():
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")


def bookworm() -> Recipe:
    return Recipe(suite="bookworm", mirror=host_mirror())
