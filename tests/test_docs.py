"""The documentation stays usable: a short front page, no dead links, and every command it shows
still starts.

README.md is the front page and docs/*.md hold the rest; a refactor that moves a module or a
file, or a page that nobody links to, fails here rather than in a reader's shell.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOC_PAGES, ROOT / "apptainer" / "README.md"]  # every page a reader follows

README_MAX_LINES = 250
SETUP_COMMANDS = ("make test", "make study")
SETUP_WITHIN_LINES = 20
HELP_TIMEOUT_S = 120
HELP_WORKERS = 2  # the development machine has two cores

PROJECT_PACKAGES = ("common", "bologan", "scaling", "energy", "analysis", "launch")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_M = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
CODE_SPAN = re.compile(r"`([^`]+)`")  # may wrap onto the next line
FILE_PATH = re.compile(r"^(?:%s|apptainer|tests|tools|docs)/[\w./*-]+\.\w+$" % "|".join(PROJECT_PACKAGES))
DOTTED_NAME = re.compile(r"^((?:%s)(?:[.:]\w+)+)(?:\(.*\))?$" % "|".join(PROJECT_PACKAGES))


def prose_and_code(path: Path) -> tuple[list[str], list[str]]:
    """The page's lines outside fenced code blocks, and the lines inside them."""
    prose, code = [], []
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        (code if in_fence else prose).append(line)
    return prose, code


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (lower case, punctuation dropped, spaces -> -)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_and_code(path)[0]:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path: Path) -> list[str]:
    return [target for line in prose_and_code(path)[0] for target in LINK.findall(line)
            if not re.match(r"^[a-z]+:", target)]


def test_readme_is_a_short_front_page_with_the_setup_commands_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    head = "\n".join(lines[:SETUP_WITHIN_LINES])
    for command in SETUP_COMMANDS:
        assert command in head, f"`{command}` is not in the first {SETUP_WITHIN_LINES} lines of README.md"


def test_every_docs_page_has_a_title_links_back_and_is_linked_from_the_readme():
    assert DOC_PAGES, "docs/ holds no pages"
    readme_targets = {(ROOT / target.split("#")[0]).resolve() for target in relative_links(README)}
    for page in DOC_PAGES:
        first = page.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{page.name}: the first line is not a title"
        back = {target.split("#")[0] for target in relative_links(page)}
        assert "../README.md" in back, f"{page.name} does not link back to README.md"
        assert page.resolve() in readme_targets, f"README.md does not link to docs/{page.name}"


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in github_anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _code_spans() -> list[tuple[Path, str]]:
    return [(page, " ".join(span.split())) for page in PAGES
            for span in CODE_SPAN.findall("\n".join(prose_and_code(page)[0]))]


def test_every_project_file_the_docs_name_exists():
    missing = []
    for page, span in _code_spans():
        if FILE_PATH.match(span) and not list(ROOT.glob(span)):
            missing.append(f"{page.relative_to(ROOT)}: `{span}`")
    assert not missing, "files named in the docs that do not exist:\n" + "\n".join(missing)


def _module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def test_every_module_and_function_the_docs_name_exists():
    """`python -m scaling.allreduce_bench`, `energy.meter.EnergyMeter`: the module file is there
    and defines the name (read from the source, so nothing heavy is imported)."""
    missing = []
    for page, span in _code_spans():
        missing += [f"{page.relative_to(ROOT)}: `{span}`" for module in PYTHON_M.findall(span)
                    if _module_file(module) is None]
        named = DOTTED_NAME.match(span)
        if not named or (page.parent / span).is_file():  # `bologan.def` beside the page is a file
            continue
        module, _, attribute = named.group(1).partition(":")
        parts = module.split(".")
        # The longest prefix that is a module; what follows must be one name defined in it.
        for split in range(len(parts), 0, -1):
            source = _module_file(".".join(parts[:split]))
            if source is not None:
                break
        rest = parts[split:] + ([attribute] if attribute else [])
        if source is None or len(rest) > 1 or (rest and rest[0] not in _top_level_names(source)):
            missing.append(f"{page.relative_to(ROOT)}: `{span}`")
    assert not missing, "modules or names in the docs that do not exist:\n" + "\n".join(missing)


def documented_modules() -> set[str]:
    """Every module that a fenced code block runs as ``python -m MODULE`` (any prefix)."""
    return {module for page in PAGES for line in prose_and_code(page)[1]
            for module in PYTHON_M.findall(line)}


def _help(module: str) -> tuple[str, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    # -X importtime lists every module imported, on stderr: it shows whether --help loaded TensorFlow.
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    return module, done


def test_every_documented_command_answers_help_without_tensorflow():
    modules = documented_modules()
    assert {"scaling.run", "analysis", "launch.study", "energy.monitor"} <= modules, sorted(modules)
    with ThreadPoolExecutor(max_workers=HELP_WORKERS) as pool:
        results = list(pool.map(_help, sorted(modules)))
    failures = []
    for module, done in results:
        if done.returncode != 0 or "usage:" not in done.stdout:
            tail = [line for line in done.stderr.splitlines() if "import time:" not in line][-3:]
            failures.append(f"python -m {module} --help: exit {done.returncode}: {' | '.join(tail)}")
        elif re.search(r"\|\s+tensorflow\s*$", done.stderr, re.MULTILINE):
            failures.append(f"python -m {module} --help imports TensorFlow")
    assert not failures, "\n".join(failures)
