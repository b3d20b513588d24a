"""Corruption robustness: out-of-distribution generalization (CTBench paper §5.5, Fig. 6 for MNIST-C,
Fig. 11 for CIFAR-10-C; original ``get_stat.run_mnist_corrupted`` / ``run_cifar10_corrupted``).

"OOD generalization, defined to be the ratio between OOD accuracy and natural accuracy": per corruption
and severity, ``relative_acc = corrupted_acc / clean_acc`` on the same (first ``n``) test images.

Two sources of corrupted images, recorded in the ``source`` column:

* ``generated`` (default) — corruptions generated locally by ``ctbench.data.corruptions`` from the clean
  test images (MNIST-C's 15, or 17 of CIFAR-10-C's 18 at severities 1-5): "locally generated",
  re-implementations, not the published files; deterministic under ``--seed``. CIFAR-10-C's frost
  cannot be generated (it blends in the published frost photographs): its rows are read from the
  published ``.npy`` files (``source`` = ``published``) when the corruption root holds CIFAR-10-C, and
  are missing otherwise.
* ``published`` — the published MNIST-C / CIFAR-10-C ``.npy`` files from the data root
  (``ctbench.data.corruption_sets``; image i of a corrupted set is clean test image i).

:func:`coverage_note` says which corruptions were generated, which read and which are missing (and
why); it is stored in the table's provenance (``settings.coverage``) and printed below the figure.

Table: one row per (corruption, severity): ``suite, source, corruption, severity, n, clean_acc,
corrupted_acc, relative_acc`` (accuracies as fractions). MNIST-C has one level per corruption
(``severity`` 1). Example::

    ctbench analyze corruption --model results/mnist/0.1/cnn7/ibp/seed0/model.pt --n 1000 --out corruption.parquet
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ctbench.analysis._model_cli import SETTINGS as COMMON_SETTINGS

NAME = "corruption"
INPUTS = {"model": ("cell", "model.pt")}  # ctbench.analysis.protocol: the analysed cell's model
SETTINGS = {**COMMON_SETTINGS, "corruption.source": "--source", "corruption.root": "--corruption-root"}
FIGURE_INPUTS: dict = {}  # `ctbench figure` reads the tables only
SOURCES = ("generated", "published")
CHUNK = 1000  # images corrupted together (seeded per chunk, so results do not depend on --batch)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctbench.analysis._model_cli import add_common_arguments

    add_common_arguments(parser, eps_help="accepted for a uniform command line; not used (accuracy on "
                         "corrupted inputs does not depend on eps)")
    parser.add_argument("--source", choices=SOURCES, default="generated",
                        help="locally generated corruptions (default) or the published .npy sets")
    parser.add_argument("--suite", default=None, help="mnist_c or cifar10_c (default: from the dataset)")
    parser.add_argument("--corruptions", nargs="+", default=None, help="subset of the suite (default: all)")
    parser.add_argument("--severities", nargs="+", type=int, default=None, help="subset (default: all)")
    parser.add_argument("--corruption-root", default=None,
                        help="data root holding mnist_c/ or CIFAR-10-C/ for --source published "
                        "(default: --data-root; staged from $CTBENCH_DATA_SOURCE if missing)")


def _accuracy(model, x, y, batch: int, device) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(x.shape[0], 1)


def missing_note(suite: str, names) -> str:
    """Why the corruptions ``names`` of ``suite`` are not generated, e.g. "frost: not generated, needs the
    published frost images; read from CIFAR-10-C .npy when available"."""
    from ctbench.data import corruption_sets
    from ctbench.data import corruptions as gen

    folder = corruption_sets.CORRUPTION_SETS.get(suite).folder
    return "; ".join(f"{c}: not generated, {gen.NOT_GENERATED[suite][c]}; read from {folder} .npy when available"
                     for c in names)


def coverage_note(df) -> str:
    """Per suite in ``df`` (this analysis's table): the corruptions generated locally, those read from the
    published files, and those of the paper's set that are missing, with why (:func:`missing_note`)."""
    from ctbench.data import corruption_sets
    from ctbench.data import corruptions as gen

    lines = []
    for suite in dict.fromkeys(df["suite"]):
        rows = df[df["suite"] == suite]
        generated = list(dict.fromkeys(rows.loc[rows["source"] == "generated", "corruption"]))
        read = list(dict.fromkeys(rows.loc[rows["source"] == "published", "corruption"]))
        folder = corruption_sets.CORRUPTION_SETS.get(suite).folder
        line = (f"{suite}: generated locally: {', '.join(generated) or 'none'}; read from the published {folder} "
                f".npy files: {', '.join(read) or 'none'}")
        missing = [c for c in gen.NOT_GENERATED.get(suite, {}) if c not in read] if generated else []
        lines.append(line + (f"; missing: {missing_note(suite, missing)}" if missing else ""))
    return "\n".join(lines)


def _plan(suite: str, source: str, corruptions, severities,
          read_missing: bool = False) -> list[tuple[str, int, str]]:
    """``(corruption, severity, source of its images)`` to evaluate. With ``source`` "generated", the
    corruptions the suite cannot generate (``NOT_GENERATED``) are read from the published files if
    ``read_missing`` (they are there), else left out."""
    from ctbench.data import corruption_sets
    from ctbench.data import corruptions as gen
    from ctbench.errors import CTBenchError

    if source == "generated":
        names = list(gen.SUITES[suite]) if suite in gen.SUITES else []
        levels = {c: list(gen.severities(suite, c)) for c in names}
        origin = dict.fromkeys(names, "generated")
        if names and read_missing:
            count = corruption_sets.CORRUPTION_SETS.get(suite).severities
            for c in gen.NOT_GENERATED.get(suite, {}):
                names.append(c)
                levels[c], origin[c] = list(range(1, count + 1)), "published"
    else:
        spec = corruption_sets.CORRUPTION_SETS.get(suite)
        names, levels = list(spec.corruptions), {c: list(range(1, spec.severities + 1)) for c in spec.corruptions}
        origin = dict.fromkeys(names, "published")
    if not names:
        raise CTBenchError(f"unknown corruption suite {suite!r}")
    unknown = [c for c in corruptions or [] if c not in names]
    absent = [c for c in unknown if c in gen.NOT_GENERATED.get(suite, {})]
    if absent:
        raise CTBenchError(f"{missing_note(suite, absent)} (no published files found under the corruption root)")
    if unknown:
        raise CTBenchError(f"{suite} ({source}) has no corruption {', '.join(unknown)}; known: {', '.join(names)}")
    plan = [(c, s, origin[c]) for c in (corruptions or names) for s in levels[c]
            if severities is None or s in severities]
    if not plan:
        raise CTBenchError(f"no (corruption, severity) left to evaluate in {suite} with severities {severities}")
    return plan


def corruption_robustness(model, data, *, suite: str, source: str = "generated", corruptions=None,
                          severities=None, seed: int = 0, batch: int = 256, device=None, root=None, indices=None,
                          out=None, key: dict | None = None):
    """Accuracy on corrupted inputs relative to clean accuracy (see module docstring).

    Args:
        model: classifier in eval mode; data: clean ``(x (N, C, H, W) in [0, 1], y (N,))`` tensors or a
            Dataset (all of it is used, corrupted copies are built in memory ``CHUNK`` images at a time).
        suite: ``mnist_c`` or ``cifar10_c``; source: ``generated`` or ``published`` (read from ``root``;
            ``indices``: the clean images' positions in the official test set, default 0..N−1). With
            ``generated``, corruptions that are not generated (CIFAR-10-C's frost) are read from ``root``
            when the published set is there (``corruption_sets.available``), else left out.
        corruptions, severities: subsets (default: all of the suite / source).
        out, key: resumable one (corruption, severity) at a time (``ctbench.certify.runner.run_rows``).

    Returns: a DataFrame, one row per (corruption, severity).
    """
    import pandas as pd
    import torch

    from ctbench.analysis._model_cli import as_batches
    from ctbench.certify.runner import run_rows
    from ctbench.data.corruption_sets import CORRUPTION_SETS, available, load_corruption_set
    from ctbench.data.corruptions import corrupt

    pairs = list(as_batches(data, batch))
    if not pairs:
        from ctbench.errors import CTBenchError

        raise CTBenchError("no inputs to analyse")
    x, y = torch.cat([p[0] for p in pairs]).cpu(), torch.cat([p[1] for p in pairs]).cpu()
    device = device or next(model.parameters()).device
    clean = _accuracy(model, x, y, batch, device)
    read_missing = source == "generated" and suite in CORRUPTION_SETS and available(suite, root)
    plan = _plan(suite, source, corruptions, severities, read_missing)

    def row(item, b, sl):  # one (corruption, severity) of the plan: a "batch" of the stage runner
        name, severity, origin = item
        if origin == "generated":
            xc = torch.cat([corrupt(x[i:i + CHUNK], name, severity, suite=suite, seed=[seed, i])
                            for i in range(0, x.shape[0], CHUNK)])
            yc = y
        else:
            ds = load_corruption_set(suite, name, severity, root, n=x.shape[0], indices=indices)
            xc, yc = ds[list(range(len(ds)))]
            if len(ds) < x.shape[0] or not torch.equal(yc, y[:len(ds)]):
                logger.warning("%s/%s: labels differ from the clean test labels (or fewer images)", suite, name)
        acc = _accuracy(model, xc, yc, batch, device)
        return pd.DataFrame([{"suite": suite, "source": origin, "corruption": name, "severity": severity,
                              "n": int(xc.shape[0]), "clean_acc": clean, "corrupted_acc": acc,
                              "relative_acc": acc / clean if clean > 0 else float("nan")}])

    return run_rows(len(plan), 1, lambda b, sl: plan[b], row, out=out, key=key, desc=NAME)


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis import _model_cli as cli
    from ctbench.data.corruptions import suite_for

    loaded = cli.load(args, need_eps=False)
    suite = args.suite or suite_for(loaded.spec.name)
    key = cli.resume_key(args, loaded, NAME, {"suite": suite, "source": args.source, "batch": args.batch,
                                              "corruptions": args.corruptions, "severities": args.severities})
    df = corruption_robustness(loaded.model, loaded.dataset, suite=suite, source=args.source,
                               corruptions=args.corruptions, severities=args.severities, seed=args.seed,
                               batch=args.batch, device=loaded.device, root=args.corruption_root or args.data_root,
                               indices=getattr(loaded.dataset, "indices", None), out=args.out, key=key)
    settings = {"suite": suite, "source": args.source, "batch": args.batch, "corruptions": args.corruptions,
                "severities": args.severities, "coverage": coverage_note(df),
                "provenance_of_images": "locally generated (ctbench.data.corruptions); rows with source 'published' "
                "read from the published .npy files" if args.source == "generated"
                else "published .npy files (ctbench.data.corruption_sets)"}
    cli.write(cli.with_identity(df, loaded), args, loaded, NAME, settings)
    return 0


def figure(tables, out_stem: Path) -> list[Path]:
    """Fig. 6 / 11: relative accuracy per corruption (mean over severities), methods side by side, one
    panel per training ε (a "mean" group at the right); the source (generated / published) in the title,
    which corruptions were generated, read or are missing (:func:`coverage_note`) below the panels."""
    import numpy as np

    from ctbench.analysis import style

    df = style.concat(tables, ("method", "eps", "suite", "corruption", "severity", "relative_acc", "source"), NAME)
    plt = style.pyplot()
    entities, trained = style.entity_order(df), style.eps_order(df["eps"])
    corr = list(dict.fromkeys(df["corruption"])) + ["mean"]
    sources = "locally generated" if set(df["source"]) == {"generated"} else "/".join(sorted(set(df["source"])))
    fig, axes = plt.subplots(len(trained), 1, figsize=(max(6.0, 0.5 * len(corr) * max(1, len(entities) / 3)),
                                                       2.4 * len(trained)), squeeze=False, sharey=True)
    for ax, eps in zip(axes[:, 0], trained, strict=True):
        sub = df[df["eps"] == eps]
        per = sub.groupby(["entity", "corruption"], observed=True)["relative_acc"].mean()
        width = 0.8 / max(len(entities), 1)
        for j, (ent, color) in enumerate(zip(entities, style.colors(len(entities)), strict=True)):
            vals = [per.get((ent, c), np.nan) for c in corr[:-1]]
            vals.append(np.nanmean(vals) if np.isfinite(vals).any() else np.nan)
            ax.bar(np.arange(len(corr)) - 0.4 + width * (j + 0.5), vals, width * 0.9, color=color, label=ent)
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_xticks(np.arange(len(corr)))
        ax.set_xticklabels(corr, rotation=45, ha="right")
        ax.set_ylabel("corrupted / clean accuracy")
        ax.set_title(f"models trained at ε = {eps} ({sources} corruptions)")
    axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.12), ncol=min(len(entities), 9), frameon=False)
    return style.save(fig, out_stem, note=f"{style.data_note(df)}\n{coverage_note(df)}")
