"""The two install paths (pip via pyproject.toml, conda via environment.yml) agree."""

import os
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_and_environment_name_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]}
    pip_names |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda_names |= {_name(r) for r in dep["pip"]}
        elif not dep.startswith(("python=", "pip")):
            conda_names.add(_name(dep))
    assert pip_names == conda_names, (
        f"only in pyproject.toml: {sorted(pip_names - conda_names)}; "
        f"only in environment.yml: {sorted(conda_names - pip_names)}"
    )


def test_torch_is_pinned_to_the_cpu_wheel_on_disk_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)[:2]
    commands = " ".join(first_blocks)
    assert "make demo" in commands and "make test" in commands
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_license_is_an_spdx_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # a string (PEP 639), not the deprecated {text = ...} table


def test_make_lab_passes_allow_root_only_to_root(tmp_path):
    """Jupyter refuses to run as root without --allow-root; `make lab` adds it for uid 0 only."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    jupyter = venv / "bin" / "jupyter"
    jupyter.write_text('#!/bin/sh\necho "jupyter $*"\n')
    jupyter.chmod(0o755)
    (venv / ".installed-stamp").touch()  # newer than pyproject.toml: make installs nothing
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "lab", f"VENV={venv}"], capture_output=True, text=True,
                         check=True).stdout
    assert "jupyter lab --notebook-dir=notebooks" in out
    assert ("--allow-root" in out) == (os.getuid() == 0)


def _layers_of_architecture_map() -> dict[str, int]:
    """docs/architecture.md's layer table as {module: layer}: ``lurm_lite.x`` and ``data_prep.y``."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("### Layers", 1)[1].split("\n\n", 2)[1]
    layers: dict[str, int] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        layer = int(cells[0].split(".", 1)[0])
        for name in re.findall(r"`([a-z_/*.]+)`", cells[1]):
            if name == "data_prep/*":
                layers |= {f"data_prep.{p.stem}": layer for p in (ROOT / "data_prep").glob("*.py") if p.stem != "__init__"}
            else:
                layers[f"lurm_lite.{name}"] = layer
    return layers


def _imported_modules(path: Path, package: str) -> set[str]:
    """The lurm_lite / data_prep modules ``path`` imports anywhere (function bodies included);
    ``package`` is the importing module's package, for relative imports."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module if node.level == 0 else f"{package}.{node.module}"
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in ("lurm_lite", "data_prep")}


def test_every_module_is_on_the_architecture_map_and_imports_only_its_layer_and_below():
    layers = _layers_of_architecture_map()
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for package in ("lurm_lite", "data_prep")
               for p in (ROOT / package).rglob("*.py") if p.stem != "__init__"}
    assert sorted(set(modules) - set(layers)) == [], "modules missing from docs/architecture.md's layer table"
    assert sorted(set(layers) - set(modules)) == [], "the layer table names modules that do not exist"
    upward = [f"{name} (layer {layers[name]}) imports {target} (layer {layers[target]})"
              for name, path in modules.items() for target in _imported_modules(path, name.rsplit(".", 1)[0])
              if target in layers and layers[target] > layers[name]]
    assert upward == []
