"""Issue 29 (4): tradeoff.png draws every method even where two share a point (IBP under CROWN-IBP in the
demo), and a panel's legend lists only what has points in it (no "literature" / "CTBench paper" entries
without such points). Checked on the matplotlib objects, not on pixels."""

from __future__ import annotations

import numpy as np
import pytest
from test_analysis_grid import LITERATURE, write_metrics

from ctbench.analysis import cells as C
from ctbench.analysis import tradeoff
from ctbench.cli import main as cli_main


def _metrics(tmp_path, *specs):
    """``(method, dataset, eps, model, nat, cert)`` → metrics.json files as `ctbench summarize` writes them."""
    return [write_metrics(tmp_path / f"c{k}/metrics.json", nat, cert, cert, dataset=dataset, eps=eps, model=model,
                          method=method)
            for k, (method, dataset, eps, model, nat, cert) in enumerate(specs)]


def _figure(paths):
    df = tradeoff.tradeoff_table(C.read_metrics(paths), C.load_literature(LITERATURE))
    return df, tradeoff.draw(df)


def _points(ax, source: str) -> dict[str, object]:
    """method → its Line2D of ``source`` in this panel."""
    return {line.get_gid().split("|")[1]: line for line in ax.get_lines()
            if line.get_gid() and line.get_gid().startswith(f"{source}|")}


def _display_xy(line) -> np.ndarray:
    return line.get_transform().transform(line.get_xydata())[0]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_coinciding_methods_are_all_visible_and_legend_has_no_empty_sources(tmp_path):
    """The demo: IBP and CROWN-IBP of equal accuracies, a model the paper's values do not belong to."""
    paths = _metrics(tmp_path, ("ibp", "mnist_mini", "0.1", "cnn_small", 0.99, 0.97),
                     ("crown_ibp", "mnist_mini", "0.1", "cnn_small", 0.99, 0.97),
                     ("sabr", "mnist_mini", "0.1", "cnn_small", 0.95, 0.90))
    df, fig = _figure(paths)
    assert set(df.source) == {"ours"}
    (ax,) = fig.axes
    ours = _points(ax, "ours")
    assert set(ours) == {"ibp", "crown_ibp", "sabr"} and not _points(ax, "literature")
    ibp, crown = ours["ibp"], ours["crown_ibp"]
    assert ibp.get_visible() and crown.get_visible()
    assert ibp.get_marker() != crown.get_marker() and ibp.get_color() != crown.get_color()
    assert tuple(ibp.get_xydata()[0]) == tuple(crown.get_xydata()[0]) == (99.0, 97.0)  # data values unchanged
    width_px = tradeoff.MARKER_SIZE * fig.dpi / 72
    assert np.hypot(*(_display_xy(ibp) - _display_xy(crown))) >= width_px - 1e-6  # side by side, not covered
    sabr = ours["sabr"]  # alone: not moved
    assert np.allclose(_display_xy(sabr), ax.transData.transform(sabr.get_xydata())[0])
    assert tradeoff.DODGE_NOTE in ax.get_xlabel()
    assert _legend(ax) == ["IBP", "CROWN-IBP", "SABR"]  # no "literature" / "CTBench paper" / source key
    import matplotlib.pyplot as plt

    plt.close(fig)
    out = tmp_path / "out"  # the command the user ran
    assert cli_main(["analyze", "tradeoff", "--metrics", *map(str, paths), "--literature", str(LITERATURE),
                     "--out-dir", str(out)]) == 0
    assert (out / "tradeoff.png").stat().st_size > 0


def test_legend_lists_literature_and_paper_only_in_panels_that_have_them(tmp_path):
    paths = _metrics(tmp_path, ("ibp", "mnist", "0.1", "cnn7", 0.9884, 0.9795),  # = the literature's IBP point
                     ("sabr", "mnist", "0.1", "cnn7", 0.99, 0.98),
                     ("ibp", "mnist", "0.3", "cnn_small", 0.97, 0.92))  # not the paper's model: no values
    _, fig = _figure(paths)
    with_lit, without = fig.axes
    assert set(_points(with_lit, "literature")) == set(_points(with_lit, "ctbench paper")) == {"ibp", "sabr"}
    assert _legend(with_lit) == ["IBP", "SABR", "literature", "CTBench paper", "ours"]
    ours_ibp, lit_ibp = _points(with_lit, "ours")["ibp"], _points(with_lit, "literature")["ibp"]
    assert np.hypot(*(_display_xy(ours_ibp) - _display_xy(lit_ibp))) >= tradeoff.MARKER_SIZE * fig.dpi / 72 - 1e-6
    assert _legend(without) == ["IBP"] and tradeoff.DODGE_NOTE not in without.get_xlabel()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_second_series_of_a_method_is_half_filled(tmp_path):
    paths = _metrics(tmp_path, ("ibp", "mnist", "0.1", "cnn7", 0.99, 0.97), ("ibp", "mnist", "0.1", "cnn5", 0.99, 0.97))
    _, fig = _figure(paths)
    lines = [line for line in fig.axes[0].get_lines() if (line.get_gid() or "").startswith("ours|")]
    assert sorted(line.get_fillstyle() for line in lines) == ["full", "left"]
    assert {"IBP (cnn5)", "IBP (cnn7)"} <= set(_legend(fig.axes[0]))
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("xy, want", [
    ([(0, 0), (0, 0), (0, 0), (100, 100)], [-1.0, 0.0, 1.0, 0.0]),
    ([(0, 0), (5, 0), (10, 0)], [-1.0, 0.0, 1.0]),  # a chain of near points is one group
    ([(0, 0), (20, 0)], [0.0, 0.0]),
])
def test_dodge_groups_points_within_a_marker_width(xy, want):
    assert tradeoff.dodge(xy, width_px=12.0) == want
