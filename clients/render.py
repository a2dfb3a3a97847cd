"""Terminal rendering of a temperature trace: each token coloured by the temperature it was sampled
at, a compact per-token table, and a one-line summary. Depends only on ``rich``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.columns import Columns
from rich.console import Group
from rich.text import Text

# Blue (cool, low tau) -> white -> red (hot, high tau).
_COLD, _MID, _HOT = (80, 140, 255), (235, 235, 235), (255, 80, 60)


def tau_colour(tau: float, tau_min: float = 0.6, tau_max: float = 1.5) -> str:
    """An ``rgb(...)`` colour for tau on a cold-to-hot scale over [tau_min, tau_max]."""
    if tau <= 0:
        return "rgb(150,150,150)"  # greedy
    x = min(max((tau - tau_min) / (tau_max - tau_min), 0.0), 1.0)
    a, b, t = (_COLD, _MID, x * 2) if x < 0.5 else (_MID, _HOT, x * 2 - 1)
    r, g, bl = (round(p + (q - p) * t) for p, q in zip(a, b))
    return f"rgb({r},{g},{bl})"


@dataclass
class TraceView:
    """What the renderers need of one completion."""

    tokens: Sequence[str]  # decoded text piece of each token
    temperatures: Sequence[float]
    updated: Sequence[bool]


def coloured_text(view: TraceView, tau_min: float = 0.6, tau_max: float = 1.5) -> Text:
    text = Text()
    for piece, tau in zip(view.tokens, view.temperatures):
        text.append(piece, style=tau_colour(tau, tau_min, tau_max))
    return text


def legend(tau_min: float = 0.6, tau_max: float = 1.5) -> Text:
    text = Text("tau ")
    text.append(f"{tau_min:.2f} ", style=tau_colour(tau_min, tau_min, tau_max))
    for i in range(9):
        tau = tau_min + (tau_max - tau_min) * i / 8
        text.append("■", style=tau_colour(tau, tau_min, tau_max))
    text.append(f" {tau_max:.2f}", style=tau_colour(tau_max, tau_min, tau_max))
    text.append("   * = temperature updated at this token")
    return text


def token_table(view: TraceView, tau_min: float = 0.6, tau_max: float = 1.5) -> Columns:
    """Per-token cells ``token tau[*]``, flowed into columns: compact even for long completions."""
    cells = []
    for piece, tau, upd in zip(view.tokens, view.temperatures, view.updated):
        shown = repr(piece)[1:-1][:14] if piece else "·"  # "·": a token with no text (e.g. end of turn)
        cell = Text(shown.ljust(14), style="bold" if piece else "dim")
        cell.append(f" {tau:4.2f}{'*' if upd else ' '}", style=tau_colour(tau, tau_min, tau_max))
        cells.append(cell)
    return Columns(cells, padding=(0, 2))


def summary(view: TraceView, seconds: float | None = None) -> str:
    taus = list(view.temperatures)
    if not taus:
        return "no tokens generated"
    line = (
        f"{len(taus)} tokens · tau mean {sum(taus) / len(taus):.3f} (min {min(taus):.2f}, max {max(taus):.2f})"
        f" · {sum(map(bool, view.updated))} updates"
    )
    if seconds:
        line += f" · {len(taus) / seconds:.1f} tok/s"
    return line


def render(view: TraceView, *, table: bool = True, seconds: float | None = None, tau_min=0.6, tau_max=1.5) -> Group:
    parts = [coloured_text(view, tau_min, tau_max), Text()]
    if table:
        parts += [token_table(view, tau_min, tau_max), Text()]
    parts += [legend(tau_min, tau_max), Text(summary(view, seconds), style="dim")]
    return Group(*parts)
