"""Figure set-up shared by every plot of the project: the house style, an Agg canvas, and PNG + PDF
files written atomically.

House style: readable font sizes, a light grid behind the data, no top and right spines, and
TrueType fonts in the PDF so figures stay editable in papers. matplotlib is imported inside the
functions: modules that only sometimes draw (a benchmark with ``--no-plot``) do not pay for it.

Figures are bare ``matplotlib.figure.Figure`` objects with their own Agg canvas, never pyplot:
drawing needs no display and leaves the process's matplotlib backend alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.atomic import atomic_write

DPI = 150
FORMATS = ("png", "pdf")

STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10.5, "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5, "legend.fontsize": 8.5, "legend.framealpha": 0.9, "lines.linewidth": 1.8,
    "lines.markersize": 6, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    "savefig.dpi": DPI, "figure.dpi": DPI, "axes.axisbelow": True,
}


def new_figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1,
               **subplots_kw: Any) -> tuple[Any, Any]:
    """``(figure, axes)``: a ``width_in`` x ``height_in`` inch figure in the house style with a
    constrained layout, and its ``nrows`` x ``ncols`` axes as a 2-D array (``axes[row, col]``).
    ``subplots_kw`` goes to ``Figure.subplots`` (``sharex=True``, ...)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplots_kw)
    return fig, axes


def save_figure(fig: Any, stem: str | Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf (each replaced atomically: temp file, fsync, rename);
    returns ``[png, pdf]``. The directory is created when missing."""
    import matplotlib

    stem = Path(stem)
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with matplotlib.rc_context(STYLE):
            atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=DPI))
        paths.append(path)
    return paths
