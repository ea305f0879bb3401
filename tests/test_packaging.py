"""pyproject.toml is the single dependency list; environment.yml, Makefile and CI agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_all_extra_is_the_union_of_the_others():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert set(extras) >= {"notebooks", "train", "gpu", "test", "all"}
    referenced = re.search(r"vaxis\[(.*)\]", extras["all"][0]).group(1).split(",")
    assert sorted(referenced) == sorted(k for k in extras if k != "all")


def test_design_card_packages_are_declared_with_lower_bounds():
    project = _pyproject()["project"]
    requirements = project["dependencies"] + [r for v in project["optional-dependencies"].values() for r in v]
    names = {_name(r) for r in requirements}
    for package in [
        "jupyterlab",
        "papermill",
        "torch",
        "transformers",
        "bitsandbytes",
        "peft",
        "trl",
        "seaborn",
        "scikit-learn",
        "nbval",
        "pytest",
    ]:
        assert package in names, package
    for r in requirements:
        if not r.startswith("vaxis["):
            assert ">=" in r, f"{r} should pin a lower bound"
    torch_req = next(r for r in project["dependencies"] if _name(r) == "torch")
    assert "+cu" not in torch_req and "==" not in torch_req  # never a CUDA-only or exact build


def test_environment_yml_installs_the_package_with_all_extras():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.M)
    assert re.search(r"^\s*-\s*pip\s*$", text, re.M)
    pip_lines = re.findall(r"^\s{6}-\s*(.+?)\s*$", text, re.M)
    assert "-e .[all]" in pip_lines
    # nothing is listed there that pyproject does not declare (besides the CPU torch pin)
    declared = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    for line in pip_lines:
        if not line.startswith("-e"):
            assert _name(line) in declared, f"environment.yml lists {line} which pyproject.toml does not"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert "make test" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:", makefile, re.M) and re.search(r"^reproduce:", makefile, re.M)
    assert "torch==2.13.0" in makefile  # CPU torch installed before anything can pull a CUDA build
