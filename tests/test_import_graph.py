"""The folders are the architecture: every import between the project's packages must follow
the flow (common <- bologan, energy <- scaling <- ...; launch only starts processes).

The graph is read from the source (every ``import`` and ``from ... import``, also inside
functions), so an import that only runs on some path is caught too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "bologan", "scaling", "energy", "analysis", "launch")

# Which project packages each package may import (besides itself). Everything else is against
# the flow: bologan -> scaling, energy -> bologan, anything -> launch, common -> anything.
# bologan may use energy's window API (the inference benchmark meters generation); energy is a
# leaf that needs nothing but common, so this adds no cycle.
ALLOWED = {
    "common": set(),
    "energy": {"common"},
    "bologan": {"common", "energy"},
    "scaling": {"common", "bologan", "energy"},
    "analysis": {"common", "bologan", "energy"},
    "launch": {"common"},
}
# Third-party modules a package must never import (analysis reads run directories only).
FORBIDDEN_THIRD_PARTY = {
    "analysis": {"tensorflow", "horovod", "keras"},
    "energy": {"tensorflow", "horovod", "keras"},
    "launch": {"tensorflow", "horovod", "keras", "mpi4py"},
    "common": {"tensorflow", "horovod", "keras"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) for every absolute import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imports_of(path):
                rel = f"{path.relative_to(root)}:{line}"
                if module in PACKAGES and module != package and module not in ALLOWED[package]:
                    found.append(f"{rel}: {package} -> {module}")
                if module in FORBIDDEN_THIRD_PARTY.get(package, ()):
                    found.append(f"{rel}: {package} -> {module}")
    return sorted(found)


def test_every_package_is_in_the_graph():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk - {"tests"} <= set(PACKAGES), "a new top-level package needs a place in ALLOWED"


def test_no_import_runs_against_the_flow():
    assert violations() == []


def test_the_checker_catches_a_backward_import(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "bologan" / "bad.py").write_text("def f():\n    from scaling.run import main\n")
    (tmp_path / "energy" / "bad.py").write_text("import bologan.model\n")
    (tmp_path / "analysis" / "bad.py").write_text("import tensorflow as tf\n")
    (tmp_path / "scaling" / "bad.py").write_text("from launch import study\n")
    (tmp_path / "common" / "bad.py").write_text("from energy.records import EnergyWindow\n")
    found = violations(tmp_path)
    assert found == [
        "analysis/bad.py:1: analysis -> tensorflow",
        "bologan/bad.py:2: bologan -> scaling",
        "common/bad.py:1: common -> energy",
        "energy/bad.py:1: energy -> bologan",
        "scaling/bad.py:1: scaling -> launch",
    ]


@pytest.mark.parametrize("package", ["analysis", "energy", "common", "launch"])
def test_importing_the_light_packages_loads_no_tensorflow(package):
    # Every module, also those in a package's subpackages (analysis/projection/...).
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                     for p in (ROOT / package).rglob("*.py") if p.stem not in ("__init__", "__main__"))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "heavy = [m for m in ('tensorflow', 'horovod') if m in sys.modules]\n"
            + "print(','.join(heavy))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


BLOCK_OTHER_PACKAGES = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('bologan', 'scaling', 'analysis', 'launch'):
            raise ImportError('energy imported ' + name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = ['energy.monitor'] + sys.argv[1:]
runpy.run_module('energy.monitor', run_name='__main__')
"""


def test_energy_runs_with_nothing_but_common(tmp_path):
    """``python -m energy.monitor -- CMD`` with every other project package made unimportable."""
    out = tmp_path / "monitor"
    res = subprocess.run([sys.executable, "-c", BLOCK_OTHER_PACKAGES, "--out", str(out), "--",
                          sys.executable, "-c", "pass"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "energy imported" not in res.stderr
    assert (out / "summary.json").is_file()
