"""No code runs from data or configuration: the package sources use no deserialiser that can
execute code, no eval/exec, and no shell built from strings.

The scan reads code tokens only (comments and string literals are skipped), so a docstring
that names a forbidden call does not trip it, while ``pickle . load`` spelt oddly still does.
"""
from __future__ import annotations

import functools
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bologan", "scaling", "energy", "analysis", "launch")

FORBIDDEN = {
    "pickle-like module": r"\b(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|jsonpickle|marshal|shelve)\b",
    "pickle.load": r"\bpickle\s*\.\s*loads?\b",
    "pandas read_pickle": r"\bread_pickle\b",
    "numpy allow_pickle": r"\ballow_pickle\s*=\s*True\b",
    "yaml.load": r"\byaml\s*\.\s*(load|load_all|unsafe_load|full_load)\b",
    "eval/exec": r"(?<![.\w])(eval|exec)\s*\(",
    "shell=True": r"\bshell\s*=\s*True\b",
    "os.system/popen": r"\bos\s*\.\s*(system|popen|exec\w*|spawn\w*)\b",
    "subprocess getoutput": r"\bsubprocess\s*\.\s*(getoutput|getstatusoutput)\b",
    "keras load_model": r"\bload_model\s*\(",
    "dynamic import": r"\b__import__\s*\(",
}

# (relative path, rule) -> why it is acceptable. Empty: nothing needed one so far.
ALLOWED: dict[tuple[str, str], str] = {}


@functools.cache
def _code_tokens(path: Path) -> str:
    """The file's code with comments and string literals removed, tokens separated by spaces."""
    skip = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    toks = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    text = " ".join(t.string for t in toks if t.type not in skip)
    # Attribute access written back together ('a . b' -> 'a.b'), so 're.compile' is a method call.
    return re.sub(r"\s*\.\s*", ".", text)


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_there_are_sources_to_scan():
    assert len(_sources()) > 20


@pytest.mark.parametrize("rule", sorted(FORBIDDEN))
def test_no_code_execution_from_data_or_config(rule):
    pattern = re.compile(FORBIDDEN[rule])
    hits = []
    for path in _sources():
        rel = str(path.relative_to(REPO))
        if (rel, rule) in ALLOWED:
            continue
        if pattern.search(_code_tokens(path)):
            hits.append(rel)
    assert not hits, f"{rule} found in {', '.join(hits)} (add to ALLOWED only with a reason)"


def test_the_scan_would_catch_each_rule(tmp_path):
    """Guard against a rule that can never match (a typo in its regular expression)."""
    samples = {
        "pickle-like module": "import pickle\n",
        "pickle.load": "x = pickle.load(fh)\n",
        "pandas read_pickle": "df = pd.read_pickle(p)\n",
        "numpy allow_pickle": "a = np.load(p, allow_pickle=True)\n",
        "yaml.load": "c = yaml.load(text)\n",
        "eval/exec": "y = eval(s)\n",
        "shell=True": "subprocess.run(cmd, shell=True)\n",
        "os.system/popen": "os.system(cmd)\n",
        "subprocess getoutput": "subprocess.getoutput(cmd)\n",
        "keras load_model": "m = tf.keras.models.load_model(p)\n",
        "dynamic import": "m = __import__(name)\n",
    }
    assert set(samples) == set(FORBIDDEN)
    for i, (rule, code) in enumerate(samples.items()):
        f = tmp_path / f"sample{i}.py"   # one file each: _code_tokens caches by path
        f.write_text(f'"""eval( in a docstring is fine."""\n# os.system( in a comment too\n{code}')
        assert re.search(FORBIDDEN[rule], _code_tokens(f)), rule
    clean = tmp_path / "clean.py"
    clean.write_text('"""pickle.load and eval( only in text."""\nx = ast.literal_eval(s)  # shell=True\n'
                     "y = re.compile(p)\nz = self.evaluate(q)\n")
    assert not any(re.search(rx, _code_tokens(clean)) for rx in FORBIDDEN.values())
