"""Files a case writes beside its history (tables, plots) and how the report finds them.

A case's output folder (``cf.outdir``: ``<report>/cases/<ID>/<column>/``) holds its
``history.jsonl`` and ``logs/``; a case may add artifacts there (PL-16 writes ``timewait.json``
and ``timewait.png``). The report links each result's history by a path relative to the report
folder; ``case_artifacts`` lists the artifacts beside that history the same way, so the HTML
page can link them next to it (``render_links``) without knowing which case wrote what.

``line_plot_png`` draws a small line chart with matplotlib's Agg backend through the object API
(``Figure`` + ``FigureCanvasAgg``: no pyplot state, safe from worker threads); matplotlib is
imported only when a plot is drawn.
"""

from __future__ import annotations

import contextlib
import html
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ARTIFACT_SUFFIXES", "case_artifacts", "line_plot_png", "render_links", "report_relative", "write_artifact"]

# What counts as an artifact beside a history (the history and the plans the agents ran are not).
ARTIFACT_SUFFIXES = (".png", ".svg", ".json", ".csv", ".txt")
_NOT_ARTIFACTS = ("history.jsonl",)
_PLAN_SUFFIX = ".plan.json"


def write_artifact(outdir: Path, name: str, data: bytes | str) -> Path:
    """Write ``data`` to ``outdir/name`` atomically (a reader sees the old file or the new one)."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"artifact name {name!r} must be a plain file name")
    path = Path(outdir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def report_relative(path: Path) -> str:
    """``path`` relative to the report folder, i.e. from its ``cases/`` component on (what the
    report's links use); the path as given when it is not under a ``cases`` folder."""
    parts = Path(path).parts
    if "cases" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("cases"):])
    return str(path)


def case_artifacts(report_dir: Path, history_relpath: str | None) -> dict[str, str]:
    """``{file name: path relative to report_dir}`` of the artifacts beside a result's history."""
    if not history_relpath:
        return {}
    folder = Path(report_dir) / history_relpath
    folder = folder.parent
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if (path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.name not in _NOT_ARTIFACTS
                and not path.name.endswith(_PLAN_SUFFIX) and not path.name.startswith(".")):
            found[path.name] = os.path.relpath(path, report_dir).replace(os.sep, "/")
    return found


def render_links(artifacts: Mapping[str, str]) -> str:
    """HTML links for ``case_artifacts`` output, e.g. for a result's detail section."""
    return " · ".join(f'<a href="{html.escape(rel, quote=True)}">{html.escape(name)}</a>'
                      for name, rel in sorted(artifacts.items()))


def line_plot_png(path: Path, series: Mapping[str, Sequence[tuple[float, float]]], *, title: str,
                  xlabel: str, ylabel: str, annotate: bool = True, log_x: bool = False) -> Path:
    """A PNG line chart of ``series`` (label -> [(x, y), ...], each sorted by x) at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, points in series.items():
        if not points:
            continue
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
        if annotate:
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{y:g}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    if log_x:
        ax.set_xscale("log", base=2)
    all_x = sorted({x for points in series.values() for x, _ in points})
    if all_x:
        ax.set_xticks(all_x)
        ax.set_xticklabels([f"{x:g}" for x in all_x])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf_path = Path(path)
    buf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = buf_path.with_name(f".{buf_path.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, buf_path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return buf_path
