"""Headless matplotlib figures for reports (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(columns: int = 1, size: tuple[float, float] = (7, 4.5)) -> tuple[Any, Any]:
    """A figure and its axes, drawn with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG (creating folders) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
