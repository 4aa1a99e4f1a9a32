"""Claims of the docs checked against the code they describe: dependencies, pickling, node-wide energy."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = {"common", "bologan", "scaling", "energy", "analysis", "launch"}


def _paragraph(page: str, needle: str) -> str:
    """The paragraph of docs/<page> that contains ``needle`` (blank lines separate paragraphs)."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    found = [p for p in re.split(r"\n\s*\n", text) if needle in p]
    assert found, f"docs/{page} no longer says {needle!r}"
    return " ".join(found[0].split())


def _third_party_imports(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in PROJECT_PACKAGES}


def test_install_page_lists_every_package_the_analysis_imports():
    said = _paragraph("install.md", "`analysis/` needs only")
    missing = sorted(n for n in _third_party_imports("analysis") if not re.search(rf"\b{n}\b", said))
    assert not missing, f"analysis/ imports {missing}, which docs/install.md does not list"


def test_pickling_between_ranks_is_admitted_where_the_code_does_it():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "scaling").rglob("*.py"))
    pickling = [name for name in ("allgather_object", "broadcast_object", "comm.gather(", "comm.allgather(",
                                  "comm.bcast(") if name in sources]
    said = _paragraph("reliability.md", "No shell command is built from user strings")
    if pickling:
        assert "Nothing is unpickled" not in said, f"the code pickles between ranks ({pickling})"
        assert "pickle" in said and "trusts its peers" in said


def test_node_wide_energy_is_not_sold_as_per_job_on_shared_nodes():
    text = (ROOT / "docs" / "energy.md").read_text(encoding="utf-8")
    tools = " ".join(text.split("### Compared with existing tools", 1)[1].split())
    assert "without exclusive nodes" not in tools
    assert "node-wide" in tools and "other jobs" in tools and "/proc/stat" in tools
