"""Loss fragmentation as the ratio of unstable ReLU neurons (CTBench paper §5.1, Fig. 3 for MNIST, Fig. 9
for CIFAR-10, App. B.7 Table 5).

Per test input x and radius ε, over all ReLU neurons of the model (original ``get_stat.py``):

* ``unstable_lower_pct`` — the sampled lower estimate: 50 points ``clamp(x + ε·clamp(N(0, I), −1, 1), 0, 1)``
  go through the network; a neuron counts as unstable if it was seen both negative and positive
  (``run_unstable_relu_lower_bound``). It never exceeds the true ratio.
* ``unstable_ibp_pct`` — the IBP upper estimate: neurons with l < 0 < u on the IBP box of
  ``[x − ε, x + ε] ∩ [0, 1]`` (Shi et al. 2021's measure; ``relu_loop``).

Every sampled point lies in the box, so lower ≤ IBP for every input. The paper evaluates every MNIST
model at both ε = 0.1 and 0.3, hence ``--eps`` takes several radii; rows carry ``eval_eps``.

Table: one row per (input, evaluation ε): ``eval_eps, eval_eps_str, index`` (position in the split),
``label, n_neurons, samples, unstable_lower_pct, unstable_ibp_pct``, after the identity and data columns
(``eval_n``, ``eval_source``: ``ctbench.analysis._model_cli``). Input i's random points at radius ε depend
only on (``--seed``, ε, i): a model's value at ε = 0.3 is the same whether or not 0.1 was requested too.
Example::

    ctbench analyze fragmentation --model results/mnist/0.1/cnn7/ibp/seed0/model.pt --eps 0.1 0.3 --out frag.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.analysis._model_cli import SETTINGS as COMMON_SETTINGS

NAME = "fragmentation"
INPUTS = {"model": ("cell", "model.pt")}  # ctbench.analysis.protocol: the analysed cell's model
SETTINGS = COMMON_SETTINGS  # the grid's settings → options
FIGURE_INPUTS: dict = {}  # `ctbench figure` reads the tables only
SAMPLES = 50  # paper §5.1: "we sample the noise 50 times"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctbench.analysis._model_cli import add_common_arguments

    add_common_arguments(parser, batch=100)
    parser.add_argument("--samples", type=int, default=SAMPLES,
                        help=f"random points per input for the lower estimate (default: {SAMPLES}, as the paper)")
    parser.add_argument("--chunk", type=int, default=10,
                        help="points per input sent through the network together (memory vs speed; default: 10)")


def fragmentation(model, data, eps, *, samples: int = SAMPLES, seed: int = 0, batch: int = 100,
                  chunk: int = 10, device=None, out=None, key: dict | None = None):
    """Sampled and IBP unstable-neuron percentages per input (see module docstring).

    Args:
        model: ``nn.Sequential`` in eval mode, supported by the bound engine.
        data: ``(x (N, C, H, W) in [0, 1], y (N,))`` tensors, a Dataset or an iterable of batches.
        eps: one radius or a sequence (floats, strings like "2/255", or (value, string) pairs).
        samples: random points per input; seed: seeds them — input i's points at radius ε come from a
            generator seeded with ``stable_seed(seed, ε, i)`` (i: its position in the split), so its value
            depends only on (model, seed, ε, input): not on the other radii requested, the batch or chunk
            size, or the device (bitwise up to the network's floating-point arithmetic).
        chunk: points per input per forward pass (``chunk · batch`` inputs at once).
        out, key: resumable batch by batch (``_model_cli.batch_rows``; the CLI passes its ``--out``).

    Returns: a DataFrame, one row per (input, ε), ε by ε; columns as in the module docstring.
    """
    import pandas as pd

    from ctbench.analysis._model_cli import batch_rows, eps_list, eps_major
    from ctbench.analysis.relu import ibp_preactivation_bounds, relu_count, sampled_unstable, stable_seed

    radii = eps_list(eps)
    relu_count(model)

    def rows(x, y, start):
        frames = []
        for value, text in radii:
            seeds = [stable_seed(int(seed), float(value), i) for i in range(start, start + x.shape[0])]
            lower = sampled_unstable(model, x, value, samples, seeds, chunk)
            bounds = ibp_preactivation_bounds(model, x, value)
            n = sum(m.shape[1] for m in lower)
            lower_count = sum(m.sum(1) for m in lower).double()
            ibp_count = sum(((l < 0) & (u > 0)).sum(1) for l, u in bounds).double()
            frames.append(pd.DataFrame({
                "eval_eps": value, "eval_eps_str": text,
                "index": range(start, start + x.shape[0]), "label": y.cpu().numpy(),
                "n_neurons": n, "samples": samples,
                "unstable_lower_pct": (100.0 * lower_count / n).cpu().numpy(),
                "unstable_ibp_pct": (100.0 * ibp_count / n).cpu().numpy(),
            }))
        return pd.concat(frames, ignore_index=True)

    df = batch_rows(data, batch, device, rows, out=out, key=key, desc=NAME)
    if df.empty:
        from ctbench.errors import CTBenchError

        raise CTBenchError("no inputs to analyse")
    return eps_major(df, radii)


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis import _model_cli as cli
    from ctbench.errors import CTBenchError

    if args.samples < 1 or args.chunk < 1:
        raise CTBenchError("--samples and --chunk must be >= 1")
    loaded = cli.load(args)
    settings = {"samples": args.samples, "chunk": args.chunk, "batch": args.batch,
                "noise": "clamp(x + eps * clamp(N(0, 1), -1, 1), 0, 1)"}
    df = fragmentation(loaded.model, loaded.dataset, loaded.eps, samples=args.samples, seed=args.seed,
                       batch=args.batch, chunk=args.chunk, device=loaded.device, out=args.out,
                       key=cli.resume_key(args, loaded, NAME, settings))
    cli.write(cli.with_identity(df, loaded), args, loaded, NAME, settings)
    return 0


def figure(tables, out_stem: Path) -> list[Path]:
    """Fig. 3 / 9: mean sampled unstable ratio (bars) and IBP upper estimate (black ticks) per method,
    one colour per training ε, one panel per evaluation ε; the note below states n and the data source."""
    from ctbench.analysis import style

    df = style.concat(tables, ("method", "eps", "eval_eps_str", "unstable_lower_pct", "unstable_ibp_pct"), NAME)
    plt = style.pyplot()
    entities, hues, evals = style.entity_order(df), style.eps_order(df["eps"]), style.eps_order(df["eval_eps_str"])
    fig, axes = style.panels(plt, len(evals))
    for ax, ev in zip(axes, evals, strict=True):
        style.grouped_bars(ax, df[df["eval_eps_str"] == ev], "unstable_lower_pct", entities=entities, hues=hues,
                           marker_value="unstable_ibp_pct", marker_label="IBP upper estimate")
        ax.set_title(f"evaluated at ε = {ev}")
        ax.set_ylabel("unstable ReLUs [%]")
    axes[0].legend(loc="best")
    return style.save(fig, out_stem, note=style.data_note(df))
