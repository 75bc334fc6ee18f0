"""The RIM library stands alone: ``import rims`` (and using it, C++ loops included) imports nothing
but torch, what torch itself imports, and the standard library; the RL suite is an extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
import torch
import torch.utils.cpp_extension  # what the C++ loops are built with (setuptools among them)
before = {name.split(".")[0] for name in sys.modules}
import rims
from rims import RIMGRU, RIMLSTM
x = torch.randn(4, 2, 6)
for cls in (RIMLSTM, RIMGRU):
    for options in ({}, {"num_layers": 2, "top_down": True}, {"communication": "workspace"}, {"num_schemata": 2}):
        model = cls(6, 8, 4, 2, **options)
        model(x)[0].sum().backward()
        with torch.no_grad():
            model.eval()(x[:1])
after = {name.split(".")[0] for name in sys.modules}
print(json.dumps(sorted(after - before)))
"""


def test_rims_imports_only_torch_and_the_standard_library() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    new = set(json.loads(result.stdout.strip().splitlines()[-1]))
    stdlib = set(sys.stdlib_module_names)
    # _sysconfigdata_<platform> is the standard library's sysconfig data, named per platform
    outside = sorted(n for n in new if n not in stdlib | {"rims", "torch"} and not n.startswith("_sysconfigdata_"))
    assert outside == [], f"import rims pulled in {outside}"
    assert "rims" in new


def test_the_suite_is_an_extra_and_the_library_needs_only_torch() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert required == {"torch", "ninja", "setuptools"}
    suite = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["optional-dependencies"]["suite"]}
    assert {"stable-baselines3", "sb3-contrib", "minigrid", "hydra-core", "wandb", "gymnasium"} <= suite
    assert "suite" in (ROOT / "scripts" / "setup.sh").read_text()
