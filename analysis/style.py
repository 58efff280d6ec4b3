"""One look for every figure: fixed colours per method, axis formatters and byte-stable saving.

Colours belong to methods, never to positions in a legend, so "MA-BN" is the same red in every figure of
every grid. Cells that share a method (e.g. MA-BN at six learning rates) keep its hue and differ in shade and
line style.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from contract.modes import ALL_BN_MODES  # noqa: E402 - the 32 mode strings, data (no torch)

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

METHOD_COLORS = {
    "Origin": "#4d4d4d",
    "LayerNorm": "#1f77b4",
    "BN (TTTTT)": "#ff7f0e",
    "MA-BN": "#d62728",
}
_OTHER_MODES = [m for m in ALL_BN_MODES if m not in ("TTETT", "TTTTT")]
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

# rcParams for every figure. Text in figures is ASCII except the rho of buffer mixing; fixed hash salt;
# fonts embedded as TrueType (editable in a paper's PDF).
RC: dict[RcKeyType, Any] = {
    "svg.hashsalt": "bnsweep-analysis",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "lines.linewidth": 1.5,
    # ASCII hyphen for negative ticks: one glyph set per font keeps each PDF to one embedded subset (faster).
    "axes.unicode_minus": False,
}
PNG_METADATA = {"Software": None}  # no matplotlib version string: same bytes on any install of this version
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": "bnsweep analysis"}


def method_color(method: str) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    if method.startswith("BN ") and method[3:] in _OTHER_MODES:
        # The 30 other mode strings: evenly spread over viridis, which holds no red or orange.
        rgba = plt.get_cmap("viridis")(_OTHER_MODES.index(method[3:]) / (len(_OTHER_MODES) - 1))
        return mcolors.to_hex(rgba)
    return "#8c564b"


def shade(color: str, rank: int, count: int) -> str:
    """The ``rank``-th of ``count`` shades of one hue: the first is the method colour, later ones lighter."""
    if count <= 1 or rank == 0:
        return color
    r, g, b = mcolors.to_rgb(color)
    hue, light, sat = colorsys.rgb_to_hls(r, g, b)
    lighter = light + (0.85 - light) * 0.75 * rank / (count - 1) if light < 0.85 else light
    return mcolors.to_hex(colorsys.hls_to_rgb(hue, lighter, sat))


def cell_styles(cells: Iterable[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """{cell: {color, linestyle, marker}} for (cell, method) pairs given in the grid's cell order."""
    cells = list(cells)
    by_method: dict[str, list[str]] = {}
    for cell, method in cells:
        by_method.setdefault(method, []).append(cell)
    styles = {}
    for cell, method in cells:
        siblings = by_method[method]
        rank = siblings.index(cell)
        styles[cell] = {
            "color": shade(method_color(method), rank, len(siblings)),
            "linestyle": LINESTYLES[rank % len(LINESTYLES)],
            "marker": MARKERS[rank % len(MARKERS)],
        }
    return styles


def _frames_text(x: float, _pos: object = None) -> str:
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


FRAMES_FORMATTER = FuncFormatter(_frames_text)


def frames_text(x: float | int | None) -> str:
    return "–" if x is None else _frames_text(float(x))


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.pdf without timestamps or version strings; close the figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    # No ligatures (matplotlib >= 3.11 shapes "fi", "ff" into ligature glyphs): a ligature glyph has no Unicode
    # value, so the PDF could not be searched for words like "final", and it costs a second embedded font subset.
    for text in fig.findobj(Text):
        if hasattr(text, "set_fontfeatures"):
            text.set_fontfeatures(["-liga"])
    fig.savefig(png, metadata=PNG_METADATA)
    # The layout is fixed by the first save; freezing it skips a second constrained-layout pass (the slow part).
    fig.set_layout_engine("none")
    fig.savefig(pdf, metadata=PDF_METADATA)
    plt.close(fig)
    return [png, pdf]
