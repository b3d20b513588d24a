"""Propagation tightness (Mao et al. 2024, "Understanding certified training with interval bound
propagation", ICLR 2024; CTBench paper §5.4, Fig. 5), as the original computes it
(``Utility/PI_functions.compute_tightness`` via ``get_stat.PI_loop``, ``relu_adjust="local"``).

Definition. Fix the ReLU pattern of the clean input x, D_k = diag(1[z_k(x) ≥ 0]), which turns the network
into its local linear replacement; fold the margin specification c = e_y − e_i (a row of
``ctbench.bounds.margin_spec``) into the last layer W_L (final-layer elision, as in IBP). For a
per-pixel input radius ε̃ = (min(x + ε, 1) − max(x − ε, 0)) / 2 (the ε-box clipped to [0, 1]):

    optimal radius   r*(c) = |c W_L D_{L−1} W_{L−1} ··· D_1 W_1 N| · ε̃
    IBP radius       r(c)  = |c W_L| D_{L−1} |W_{L−1}| ··· D_1 |W_1| |N| · ε̃
    tightness        τ(x, c) = r*(c) / r(c)          (0 < τ ≤ 1; τ = 1 if r(c) = 0)

where N is the input normalization (1/σ) and every BatchNorm a diagonal γ/√(var + eps) with running
statistics, fused into its convolution as in the bound engine (|s·W| = |s|·|W|). r is IBP's radius for
the linear replacement (computed forward: IBP's radius map with each ReLU replaced by D_k), r* the
exact radius of that linear map over the box (back-substitution with ``ctbench.bounds.layers``). The
per-input value is the mean of τ over the examined margins; the model's value is the mean over inputs
(= the original's mean over all (input, margin) pairs).

Choices where the reference leaves room (closest to Mao et al. 2024): biases do not enter (radii only);
D uses ≥ 0 as the original; with K − 1 > ``max_margins`` (default 8, the original's
``max_examined_class``; so also for K = 10) a random subset of margins per input is examined — an
unbiased estimate of the all-margin mean, input i's subset drawn from a CPU generator seeded with
``stable_seed(seed, "margins", i)`` (``ctbench.analysis.relu``; i: its position in the split), so it depends
on nothing but (``--seed``, i) and is the same at every ε (``--max-margins 0``: all margins); the
original clamps r* and r at 1e-8 before dividing, here τ = r*/r exactly and τ = 1 where r = 0 (both
radii vanish: IBP is exact). ε must be > 0 (at ε = 0 both radii vanish).

τ = 1 when the linear replacement has no sign cancellation (one affine layer, or non-negative hidden
weights with all ReLUs active); it decreases as IBP's interval arithmetic over-approximates more.

Table: one row per (input, evaluation ε): ``eval_eps, eval_eps_str, index, label, n_margins, tightness,
correct`` (clean prediction) and ``ibp_certified`` (IBP margin lower bounds all > 0 on the same box), after
the identity and data columns (``eval_n``, ``eval_source``: ``ctbench.analysis._model_cli``). Fig. 5's
y-axis, the certification cascade's certified accuracy, is joined when the figure is drawn::

    ctbench figure tightness results/*/*/*/*/seed0/analysis/tightness.parquet \\
        --metrics results/*/*/*/*/seed0/metrics.json --out results/analysis/tightness
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.analysis._model_cli import SETTINGS as COMMON_SETTINGS

NAME = "tightness"
INPUTS = {"model": ("cell", "model.pt")}  # ctbench.analysis.protocol: the analysed cell's model
SETTINGS = COMMON_SETTINGS  # the grid's settings → options
#: `ctbench figure tightness ... --metrics`: the cascade's certified accuracy is Fig. 5's y-axis
FIGURE_INPUTS = {"metrics": ("table1", "metrics.json")}
MAX_MARGINS = 8  # the original's max_examined_class


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctbench.analysis._model_cli import add_common_arguments

    add_common_arguments(parser, batch=128)
    parser.add_argument("--max-margins", type=int, default=MAX_MARGINS,
                        help=f"examine a random subset of this many margins per input when there are more "
                        f"(default: {MAX_MARGINS}, as the original; 0: all)")


def _local_radius(layers, x, r):
    """Clean forward of ``x`` with IBP's radius map, ReLUs replaced by D = 1[z ≥ 0]: (masks, r before W_L)."""
    from ctbench.bounds.layers import ReLULayer

    c, masks = x, []
    for layer in layers[:-1]:
        if isinstance(layer, ReLULayer):
            d = (c >= 0).to(c.dtype)
            masks.append(d)
            c, r = c * d, r * d
        else:
            c, r = layer.ibp(c, r)
    return masks, r


def tightness_batch(model, x, y, eps: float, C=None):
    """τ per (input, margin) for a batch: (B, S). ``C`` (B, S, K) defaults to all K − 1 margins."""
    import torch

    from ctbench.bounds import margin_spec
    from ctbench.bounds.layers import LinearLayer, ReLULayer, parse_model
    from ctbench.errors import CTBenchError

    layers = parse_model(model)
    if not layers or not isinstance(layers[-1], LinearLayer):
        raise CTBenchError("propagation tightness needs a model whose last layer is Linear")
    if eps <= 0:
        raise CTBenchError("propagation tightness needs eps > 0 (at eps = 0 both radii vanish)")
    with torch.no_grad():
        if C is None:
            C = margin_spec(y, layers[-1].module.out_features, dtype=x.dtype)
        lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        r0 = (upper - lower) / 2
        masks, r = _local_radius(layers, x, r0)
        W, _ = layers[-1].folded(C)  # c·W_L: (B, S, n)
        denom = torch.bmm(W.abs(), r.flatten(1).unsqueeze(-1)).squeeze(-1)
        A = W
        for layer in reversed(layers[:-1]):
            if isinstance(layer, ReLULayer):
                d = masks.pop()
                A = A * d.unsqueeze(1)
            else:
                A, _ = layer.back(A)
        num = torch.bmm(A.abs().flatten(2), r0.flatten(1).unsqueeze(-1)).squeeze(-1)
        safe = torch.where(denom > 0, denom, torch.ones_like(denom))
        return torch.where(denom > 0, num / safe, torch.ones_like(num))


def tightness(model, data, eps, *, max_margins: int = MAX_MARGINS, seed: int = 0, batch: int = 128, device=None,
              out=None, key: dict | None = None):
    """Propagation tightness per input (see module docstring) on ``data``: ``(x, y)`` tensors, a Dataset
    or an iterable of batches; ``eps`` one radius or a sequence; ``out``, ``key``: resumable batch by batch
    (``_model_cli.batch_rows``). Returns a DataFrame, one row per (input, ε), ε by ε."""
    import pandas as pd
    import torch

    from ctbench.analysis._model_cli import batch_rows, eps_list, eps_major
    from ctbench.analysis.relu import stable_seed
    from ctbench.bounds import ibp_bounds, margin_spec
    from ctbench.errors import CTBenchError

    if max_margins < 0:
        raise CTBenchError(f"max_margins must be >= 0, got {max_margins}")
    radii = eps_list(eps)

    def rows(x, y, start):
        with torch.no_grad():
            logits = model(x)
        C_all = margin_spec(y, logits.shape[1], dtype=x.dtype)
        C = C_all
        if 0 < max_margins < C.shape[1]:
            gens = [torch.Generator().manual_seed(stable_seed(int(seed), "margins", i))
                    for i in range(start, start + x.shape[0])]
            keys = [torch.rand(C.shape[1], generator=g) for g in gens]
            pick = torch.stack(keys).argsort(1)[:, :max_margins].to(x.device)  # (B, max_margins)
            C = C.gather(1, pick.unsqueeze(-1).expand(-1, -1, C.shape[2]))
        frames = []
        for value, text in radii:
            tau = tightness_batch(model, x, y, value, C)
            with torch.no_grad():
                lb, _ = ibp_bounds(model, (x - value).clamp(min=0), (x + value).clamp(max=1), C_all)
            frames.append(pd.DataFrame({
                "eval_eps": value, "eval_eps_str": text, "index": range(start, start + x.shape[0]),
                "label": y.cpu().numpy(), "n_margins": C.shape[1], "tightness": tau.mean(1).double().cpu().numpy(),
                "correct": (logits.argmax(1) == y).cpu().numpy(), "ibp_certified": (lb > 0).all(1).cpu().numpy(),
            }))
        return pd.concat(frames, ignore_index=True)

    df = batch_rows(data, batch, device, rows, out=out, key=key, desc=NAME)
    if df.empty:
        raise CTBenchError("no inputs to analyse")
    return eps_major(df, radii)


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis import _model_cli as cli

    loaded = cli.load(args)
    settings = {"max_margins": args.max_margins, "relu_adjust": "local", "batch": args.batch}
    df = tightness(loaded.model, loaded.dataset, loaded.eps, max_margins=args.max_margins, seed=args.seed,
                   batch=args.batch, device=loaded.device, out=args.out,
                   key=cli.resume_key(args, loaded, NAME, settings))
    cli.write(cli.with_identity(df, loaded), args, loaded, NAME, settings)
    return 0


def figure(tables, out_stem: Path) -> list[Path]:
    """Fig. 5: certified accuracy vs mean propagation tightness, one point per method and training ε,
    one panel per (dataset, evaluation ε).

    The y-value of a model evaluated at its own training ε is the certification cascade's certified
    accuracy, the ``cert_acc`` column (percent; ``ctbench figure tightness ... --metrics`` joins it from
    the cells' ``metrics.json``, as the workflow does): filled markers, as the paper. Where there is no
    certification (no metrics, or an evaluation ε other than the training ε) it falls back to the
    IBP-certified accuracy on the analysed samples: hollow markers. The axis label and the note below
    the panels say which was used, with n and the data source."""
    import numpy as np

    from ctbench.analysis import style
    from ctbench.core import eps_pair as parse_eps

    df = style.concat(tables, ("method", "eps", "eval_eps", "eval_eps_str", "tightness", "ibp_certified"), NAME)
    train_eps = df["eps"].map(lambda e: parse_eps(str(e))[0])
    cert = df["cert_acc"].astype(float) if "cert_acc" in df.columns else np.nan
    df["cascade"] = np.isclose(df["eval_eps"].astype(float), train_eps, rtol=0, atol=1e-9) & np.isfinite(cert)
    df["y"] = np.where(df["cascade"], cert, 100.0 * df["ibp_certified"].astype(float))
    plt = style.pyplot()
    keys = [(d, e) for d in sorted(df["dataset"].unique())
            for e in style.eps_order(df[df["dataset"] == d]["eval_eps_str"])]
    fig, axes = style.panels(plt, len(keys), sharey=False)
    hues = style.eps_order(df["eps"])
    any_cascade, any_ibp = bool(df["cascade"].any()), bool((~df["cascade"]).any())
    ylabel = ("certified accuracy [%]" if any_cascade and any_ibp else
              "certified accuracy (cascade) [%]" if any_cascade else "IBP-certified accuracy [%]")
    for ax, (dataset, ev) in zip(axes, keys, strict=True):
        sub = df[(df["dataset"] == dataset) & (df["eval_eps_str"] == ev)]
        points = sub.groupby(["entity", "eps", "cascade"], observed=True)[["tightness", "y"]].mean().reset_index()
        for hue, color in zip(hues, style.colors(len(hues)), strict=True):
            for cascade in (True, False):
                p = points[(points["eps"] == hue) & (points["cascade"] == cascade)]
                if p.empty:
                    continue
                what = "" if not (any_cascade and any_ibp) else " (cascade)" if cascade else " (IBP only)"
                ax.scatter(p["tightness"], p["y"], color=color, facecolors=color if cascade else "none",
                           label=f"trained at ε {hue}{what}")
                for row in p.itertuples(index=False):
                    ax.annotate(row.entity, (row.tightness, row.y), fontsize=6, xytext=(3, 2),
                                textcoords="offset points")
        if len(points) and points["tightness"].max() > 20 * points["tightness"].min() > 0:
            ax.set_xscale("log")
        ax.set_title(f"{dataset}, ε = {ev}")
        ax.set_xlabel("propagation tightness")
        ax.set_ylabel(ylabel)
    axes[0].legend(loc="best")
    return style.save(fig, out_stem, note=_note(df, any_cascade, any_ibp))


def _note(df, any_cascade: bool, any_ibp: bool) -> str:
    """The figure's note: the data (n, source) of the tightness, then where the y-values come from."""
    from ctbench.analysis import style

    lines = [style.data_note(df)]
    if any_cascade:
        ns = sorted({int(n) for n in df.loc[df["cascade"], "cert_n"].dropna()}) if "cert_n" in df.columns else []
        n = f"{ns[0]:,}" if len(ns) == 1 else f"{ns[0]:,}–{ns[-1]:,}" if ns else "?"
        lines.append(f"{'filled: ' if any_ibp else 'y: '}certified accuracy of the certification cascade at the "
                     f"training ε (metrics.json, n = {n} certified test samples per model)")
    if any_ibp:
        lines.append(f"{'hollow: ' if any_cascade else 'y: '}IBP-certified accuracy on the analysed samples "
                     "(no certification of the model at this ε was given)")
    return "\n".join(lines)
