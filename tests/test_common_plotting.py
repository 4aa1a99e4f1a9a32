"""common.plotting: the house style, PNG + PDF written atomically, matplotlib loaded only to draw."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.plotting import STYLE, new_figure, save_figure


def test_figure_in_the_house_style_saved_as_png_and_pdf(tmp_path):
    fig, axes = new_figure(4.0, 3.0, nrows=2, ncols=1, sharex=True)
    assert axes.shape == (2, 1) and tuple(fig.get_size_inches()) == (4.0, 3.0)
    ax = axes[0, 0]
    assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
    assert STYLE["pdf.fonttype"] == 42      # TrueType: text stays editable in the PDF
    ax.plot([1, 2, 3], [1, 4, 9])
    paths = save_figure(fig, tmp_path / "sub" / "fig.v2")
    assert paths == [tmp_path / "sub" / "fig.v2.png", tmp_path / "sub" / "fig.v2.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert b"/FontFile2" in paths[1].read_bytes()     # the embedded TrueType font of fonttype 42
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.v2.pdf", "fig.v2.png"]  # no temp left


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    fig, _ = new_figure(2.0, 2.0)
    (png, _pdf) = save_figure(fig, tmp_path / "f")
    before = png.read_bytes()

    class Broken:
        def savefig(self, *_a, **_k):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_figure(Broken(), tmp_path / "f")
    assert png.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_importing_it_loads_no_matplotlib():
    code = "import sys, common.plotting; print('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr
