"""Model utilization (CTBench paper §5.3, Fig. 4 for MNIST, Fig. 10 for CIFAR-10).

"We define model utilization to be the ratio of neurons activated by the clean input": per input, the
fraction of all ReLU neurons with pre-activation z > 0, averaged over inputs. Beside it, as the
original's ``relu_loop`` (``relu.json``), the fractions of dead (u ≤ 0), active (l ≥ 0 < u) and unstable
(l < 0 < u) neurons on the IBP box of radius ε around each input (clipped to [0, 1]; conventions in
``ctbench.analysis.relu``). With ε = 0 the box fractions reduce to the clean activation pattern.

Table: one row per (evaluation ε, ReLU layer), plus a layer "all" over all ReLU neurons, with
``n_neurons`` (per input), ``n_inputs`` and, in percent averaged over inputs, ``utilization_pct`` (clean),
``dead_pct``, ``active_pct``, ``unstable_pct`` (IBP box at ``eval_eps``), after the identity and data
columns (``eval_n``, ``eval_source``: ``ctbench.analysis._model_cli``). No random draws. Example::

    ctbench analyze utilization --model results/mnist/0.1/cnn7/ibp/seed0/model.pt --eps 0.1 0.3 --out util.parquet
    ctbench figure utilization results/*/*/*/*/seed0/analysis/utilization.parquet --out results/analysis/utilization
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.analysis._model_cli import SETTINGS as COMMON_SETTINGS

NAME = "utilization"
INPUTS = {"model": ("cell", "model.pt")}  # ctbench.analysis.protocol: the analysed cell's model
SETTINGS = COMMON_SETTINGS  # the grid's settings → options
FIGURE_INPUTS: dict = {}  # `ctbench figure` reads the tables only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctbench.analysis._model_cli import add_common_arguments

    add_common_arguments(parser, eps_help="radii of the IBP boxes for the dead / active / unstable "
                         "fractions (default: the model's training eps); utilization itself is on clean inputs")


def utilization(model, data, eps, *, batch: int = 256, device=None, out=None, key: dict | None = None):
    """Utilization and IBP ReLU status of ``model`` (eval mode) on ``data`` (see module docstring).

    Args:
        model: ``nn.Sequential`` supported by the bound engine.
        data: ``(x (N, C, H, W) in [0, 1], y (N,))`` tensors, a Dataset or an iterable of batches.
        eps: one radius or a sequence (floats, strings like "2/255", or (value, string) pairs).
        batch: inputs per batch when ``data`` is a pair of tensors or a Dataset.
        device: move batches there (default: leave them where they are).
        out, key: resumable batch by batch (``_model_cli.batch_rows``: each batch's counts are its rows).

    Returns: a DataFrame with columns ``eval_eps, eval_eps_str, layer, n_neurons, n_inputs,
    utilization_pct, dead_pct, active_pct, unstable_pct``.
    """
    import pandas as pd

    from ctbench.analysis._model_cli import batch_rows, eps_list
    from ctbench.analysis.relu import ibp_preactivation_bounds, preactivations, relu_count, status

    radii = eps_list(eps)
    L = relu_count(model)

    def counts(x, y, start):  # one row per (ε, layer): this batch's neuron counts (integers, exact in float64)
        pre = preactivations(model, x)
        rows = []
        for i, (value, _) in enumerate(radii):
            for k, (l, u) in enumerate(ibp_preactivation_bounds(model, x, value)):
                dead, active, unstable = (float(c.sum()) for c in status(l, u))
                rows.append({"eps_pos": i, "layer": k, "size": pre[k].shape[1], "inputs": x.shape[0],
                             "active_clean": float((pre[k] > 0).sum()), "dead": dead, "active": active,
                             "unstable": unstable})
        return pd.DataFrame(rows)

    per_batch = batch_rows(data, batch, device, counts, out=out, key=key, desc=NAME)
    if per_batch.empty:
        from ctbench.errors import CTBenchError

        raise CTBenchError("no inputs to analyse")
    total = per_batch.groupby(["eps_pos", "layer"]).sum()
    n_inputs = int(total.loc[(0, 0), "inputs"])
    sizes = per_batch.groupby("layer")["size"].first()
    rows = []
    for i, (value, text) in enumerate(radii):
        for ks, name in [([k], f"relu{k + 1}") for k in range(L)] + [(list(range(L)), "all")]:
            part = total.loc[[(i, k) for k in ks]]
            n = int(sizes[ks].sum())
            denom = float(n) * n_inputs / 100.0
            pct = {c: float(part[c].sum()) / denom for c in ("active_clean", "dead", "active", "unstable")}
            rows.append({"eval_eps": value, "eval_eps_str": text, "layer": name, "n_neurons": n,
                         "n_inputs": n_inputs, "utilization_pct": pct["active_clean"], "dead_pct": pct["dead"],
                         "active_pct": pct["active"], "unstable_pct": pct["unstable"]})
    return pd.DataFrame(rows)


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis import _model_cli as cli

    loaded = cli.load(args)
    settings = {"batch": args.batch}
    df = utilization(loaded.model, loaded.dataset, loaded.eps, batch=args.batch, device=loaded.device, out=args.out,
                     key=cli.resume_key(args, loaded, NAME, settings))
    cli.write(cli.with_identity(df, loaded), args, loaded, NAME, settings)
    return 0


def figure(tables, out_stem: Path) -> list[Path]:
    """Fig. 4 / 10: utilization on clean inputs (left), then per evaluation ε the IBP box's
    dead / unstable / active fractions (stacked), methods side by side, one colour per training ε; the
    note below states n and the data source."""
    from ctbench.analysis import style

    df = style.concat(tables, ("method", "eps", "layer", "eval_eps_str", "utilization_pct", "dead_pct",
                               "active_pct", "unstable_pct"), NAME)
    df = df[df["layer"] == "all"]
    plt = style.pyplot()
    entities, hues, evals = style.entity_order(df), style.eps_order(df["eps"]), style.eps_order(df["eval_eps_str"])
    keys = [(e, h) for e in entities for h in hues if ((df["entity"] == e) & (df["eps"] == h)).any()]
    box_width = max(style.PANEL_WIDTH, 0.32 * len(keys) + 1.0)
    widths = [style.PANEL_WIDTH] + [box_width] * len(evals)
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths), 2.8), gridspec_kw={"width_ratios": widths},
                             squeeze=False)
    axes = list(axes[0])
    clean = df.drop_duplicates(subset=["entity", "eps", "seed", "dataset", "model"])
    style.grouped_bars(axes[0], clean, "utilization_pct", entities=entities, hues=hues)
    axes[0].set_title("clean inputs: model utilization")
    axes[0].set_ylabel("active ReLUs [%]")
    axes[0].legend(loc="best")
    for ax, ev in zip(axes[1:], evals, strict=True):
        sub = df[df["eval_eps_str"] == ev]
        means = sub.groupby(["entity", "eps"])[["dead_pct", "unstable_pct", "active_pct"]].mean()
        bottom = [0.0] * len(keys)
        for col, color in zip(("dead_pct", "unstable_pct", "active_pct"), ("0.6", "tab:red", "tab:green"),
                              strict=True):
            vals = [float(means.loc[k, col]) if k in means.index else 0.0 for k in keys]
            ax.bar(range(len(keys)), vals, 0.8, bottom=bottom, color=color, label=col.removesuffix("_pct"))
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{e} (ε {h})" for e, h in keys], rotation=60, ha="right")
        ax.set_ylim(0, 100)
        ax.set_title(f"IBP box at ε = {ev}")
        ax.set_ylabel("ReLU neurons [%]")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return style.save(fig, out_stem, note=style.data_note(df))
