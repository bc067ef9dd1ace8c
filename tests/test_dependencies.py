"""What the code imports is declared in pyproject.toml, and what is declared is locked.

``./dev`` installs requirements.lock, not pyproject.toml: a dependency declared
but missing from the lock (or locked outside its declared bounds) means the
lock was not regenerated (``./dev lock``); a module the code imports that no
declared distribution provides works only while something else drags it in.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from django.conf import settings

# pytest depends on packaging, so it is there wherever the tests run.
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"jobtracker", "processing"}
# uv writes one line per pin: "name==version" with an optional "; marker", then hashes.
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)", re.M)


def normalised(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Python_Docx`` is ``python-docx``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, list[Requirement]]:
    """pyproject.toml's requirements: ``runtime`` and each optional extra by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"runtime": project["dependencies"], **project.get("optional-dependencies", {})}
    return {group: [Requirement(spec) for spec in specs] for group, specs in groups.items()}


def locked() -> dict[str, set[str]]:
    """requirements.lock's pins: each distribution's versions (one per set of markers)."""
    pins: dict[str, set[str]] = {}
    for match in _PIN.finditer((ROOT / "requirements.lock").read_text()):
        pins.setdefault(normalised(match["name"]), set()).add(match["version"])
    return pins


def imported_modules() -> dict[str, set[str]]:
    """Every third-party top-level module imported anywhere in the application's code
    (inside functions too), with the files that import it."""
    modules: dict[str, set[str]] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        modules.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return modules


def test_every_declared_dependency_is_locked_within_its_bounds() -> None:
    pins = locked()
    problems = []
    for group, requirements in declared().items():
        for requirement in requirements:
            versions = pins.get(normalised(requirement.name))
            if not versions:
                problems.append(f"{requirement} ({group}) is not in requirements.lock")
            elif not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
                problems.append(f"{requirement} ({group}) is locked at {', '.join(versions)}")
    assert not problems, "run ./dev lock and commit requirements.lock:\n" + "\n".join(problems)


def test_every_module_the_application_imports_comes_from_a_declared_runtime_dependency() -> None:
    runtime = {normalised(requirement.name) for requirement in declared()["runtime"]}
    providers = importlib.metadata.packages_distributions()
    modules = imported_modules()
    assert {"django", "eyecite", "regex", "courts_db"} <= modules.keys()  # the walk sees them
    problems = []
    for module, files in sorted(modules.items()):
        distributions = {normalised(name) for name in providers.get(module, [])}
        if not distributions & runtime:
            found_in = ", ".join(sorted(distributions)) or "no installed distribution"
            problems.append(f"{module} (imported in {', '.join(sorted(files))}; from {found_in})")
    assert not problems, (
        "declare these in pyproject.toml's dependencies, then ./dev lock:\n" + "\n".join(problems)
    )


def test_every_app_middleware_and_channel_layer_the_settings_name_is_declared() -> None:
    """Django imports these by their dotted path; no import statement names them."""
    runtime = {normalised(requirement.name) for requirement in declared()["runtime"]}
    providers = importlib.metadata.packages_distributions()
    dotted_paths = [
        *settings.INSTALLED_APPS,
        *settings.MIDDLEWARE,
        *(layer["BACKEND"] for layer in settings.CHANNEL_LAYERS.values()),
    ]
    problems = []
    for dotted_path in dotted_paths:
        module = dotted_path.partition(".")[0]
        distributions = {normalised(name) for name in providers.get(module, [])}
        if module not in FIRST_PARTY and not distributions & runtime:
            problems.append(f"{dotted_path} (from {', '.join(distributions) or 'nothing'})")
    assert not problems, "declare these in pyproject.toml's dependencies:\n" + "\n".join(problems)
