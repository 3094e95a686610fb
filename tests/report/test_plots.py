"""The PNGs open, and their figures hold what they claim: each run's step times, the warm-up
left out of the window shaded, the window, the published step time and curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.lines import Line2D

from tests.report.recipe_logs import log_text, recipe_path, step_times
from trainbench.recipe import tables
from trainbench.report import build, plots
from trainbench.report.plots import scaling_figure, step_time_figure, write_plots


@pytest.fixture
def pairs(tmp_path: Path) -> list:
    for i, ref in enumerate(r for r in tables.references() if r.dtype == "fp8"):
        recipe_path(tmp_path, ref.dtype, ref.model, ref.gpus, i).write_text(
            log_text("megatron", step_times(ref.step_time_s), ref.gbs)
        )
    return build([str(tmp_path)])


def test_pngs_open(pairs: list, tmp_path: Path) -> None:
    written, notes = write_plots(pairs, tmp_path / "plots")
    assert [p.name for p in written] == ["step_times.png", "scaling.png"] and notes == []
    for path in written:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 600
        assert np.ptp(image[..., :3]) > 0.5  # not blank


def test_step_time_panels(pairs: list) -> None:
    fig = step_time_figure(pairs)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(pairs) == 6
    for ax, (run, row) in zip(axes, pairs, strict=True):
        steps, times = _step_line(ax)
        assert list(steps) == sorted(run.step_times_s) and list(times) == [run.step_times_s[s] for s in steps]
        spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches)
        assert spans == [(0.5, 34.5), (34.5, 44.5)]  # warm-up 1-34 shaded, window 35-44
        published = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
        assert published[0].get_ydata()[0] == row["reference"]["step_time_s"]
        assert ax.get_ylim()[1] < run.step_times_s[1]  # the compile step is marked at the top, not scaled in
        assert f"{run.step_times_s[1]:.3g} s" in [t.get_text() for t in ax.texts]


def _step_line(ax: object) -> tuple:
    line = next(ln for ln in ax.lines if ln.get_marker() == "." and len(ln.get_xdata()) > 1)  # type: ignore[attr-defined]
    return line.get_xdata(), line.get_ydata()


def test_scaling_curve(pairs: list) -> None:
    fig = scaling_figure([row for _, row in pairs])
    assert fig is not None
    ax_tps, ax_mfu = fig.axes[:2]
    published = [ln for ln in ax_tps.lines if ln.get_linestyle() == "-"]
    refs = sorted((r for r in tables.references() if r.dtype == "fp8"), key=lambda r: r.gpus)
    assert list(published[0].get_xdata()) == [r.gpus for r in refs]
    assert list(published[0].get_ydata()) == [r.tokens_per_s for r in refs]
    runs = sorted((ln.get_xdata()[0], ln.get_ydata()[0]) for ln in ax_tps.lines if ln.get_marker() == "D")
    assert [gpus for gpus, _ in runs] == [r.gpus for r in refs]
    assert [tps for _, tps in runs] == pytest.approx([r.tokens_per_s for r in refs], rel=0.002)
    mfu_runs = [ln for ln in ax_mfu.lines if ln.get_marker() == "D"]
    assert len(mfu_runs) == 6 and all(isinstance(ln, Line2D) for ln in mfu_runs)


def test_pages_and_nothing_to_plot(pairs: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "PER_PAGE", 4)  # 6 runs: two pages of step-time plots
    written, _ = write_plots(pairs, tmp_path / "p")
    assert sorted(p.name for p in written) == ["scaling.png", "step_times_01.png", "step_times_02.png"]
    for _, row in pairs:
        row["tokens_per_s"] = None
    assert scaling_figure([row for _, row in pairs]) is None


def test_proxy_runs_of_two_series_keep_their_colours(tmp_path: Path) -> None:
    """Hollow proxy markers must still say which series they belong to (their edge colour)."""
    for i, ref in enumerate(r for r in tables.references() if r.gpus == 32):  # the bf16 and fp8 proxies
        recipe_path(tmp_path, ref.dtype, ref.model, ref.gpus, i).write_text(
            log_text("megatron", step_times(ref.step_time_s), ref.gbs)
        )
    fig = scaling_figure([row for _, row in build([str(tmp_path)])])
    assert fig is not None
    runs = [ln for ln in fig.axes[0].lines if ln.get_marker() == "D"]
    assert len(runs) == 2 and all(ln.get_markerfacecolor() == "white" for ln in runs)  # both proxies: hollow
    edges = {str(ln.get_markeredgecolor()) for ln in runs}
    assert len(edges) == 2 and "black" not in edges
