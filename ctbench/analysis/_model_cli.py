"""Command line and bookkeeping shared by the per-model analyses (fragmentation, utilization, tightness,
corruption): the common options, loading a stored model with its test data, the cell-identity columns
every row carries, the provenance, and writing the Parquet table.

Identity columns (so tables of many models concatenate for the figures): ``dataset`` (the model's),
``eps`` (the cell's training ε as configured, e.g. "0.1" or "2/255"), ``model`` (architecture),
``method``, ``seed``, ``variant`` (``config["variant"]``, "" if absent). Where an analysis evaluates at
several radii, ``eval_eps`` (float) and ``eval_eps_str`` (as given) say at which.

Data columns (every per-model table and figure states its sample count and data source): ``eval_dataset``
(the dataset evaluated on), ``eval_split`` ("test" unless ``--split``), ``eval_n`` (samples analysed:
the first ``--n`` of the split, or all of it), ``eval_source`` (where the data came from, in words:
the dataset's registry ``source`` and the verified folder or shipped file it was read from). The
provenance repeats them (``dataset``, ``split``, ``n``, ``data_source``, ``data_location``).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from ctbench.errors import CTBenchError

logger = logging.getLogger(__name__)

IDENTITY = ("dataset", "eps", "model", "method", "seed", "variant")
#: the grid's settings of every per-model analysis (``Grid.analysis_settings``) → the option that takes them
#: (ctbench.analysis.protocol, ``SETTINGS``)
SETTINGS = {"eps": "--eps", "seed": "--seed", "n": "--n"}


def add_common_arguments(parser: argparse.ArgumentParser, *, eps_help: str | None = None,
                         batch: int = 256) -> None:
    """The options every per-model analysis takes."""
    parser.add_argument("--model", type=Path, required=True, help="stored model (model.pt)")
    parser.add_argument("--eps", nargs="+", default=None, metavar="EPS",
                        help=eps_help or "radii in [0, 1] pixel space, e.g. 0.1 0.3 or 2/255 "
                        "(default: the model's training eps)")
    parser.add_argument("--dataset", default=None, help="dataset (default: the model's)")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="split (default: test)")
    parser.add_argument("--n", type=int, default=None, help="use the first N samples (default: all)")
    parser.add_argument("--batch", type=int, default=batch, help=f"inputs per batch (default: {batch})")
    parser.add_argument("--data-root", default=None, help="prepared data root (default: $CTBENCH_DATA_ROOT or ./data)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the analysis (default: 0)")
    parser.add_argument("--settings", type=Path, metavar="FILE",
                        help="the analysis' stage settings file the workflow writes "
                        "(<cell>/settings/analysis_<name>.json): it replaces the options it holds, its fingerprint is "
                        "recorded and a model made for other settings is refused")
    parser.set_defaults(fingerprint="", expect={})  # by hand: nothing fingerprinted, nothing expected
    parser.add_argument("--out", type=Path, required=True, help="output table (.parquet)")


def apply_settings(parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict, stage: str) -> None:
    """Set ``args`` from ``--settings`` (``ctbench.stagefile``): each setting of the analysis' ``SETTINGS``
    (setting → option) through the option's type; records the fingerprint computed from them and the model's
    expected fingerprints. The options the file replaces, and ``--dataset``/``--split``, are refused beside it."""
    from ctbench import stagefile

    actions = {a.dest: a for a in parser._actions}
    dests = {key: option.lstrip("-").replace("-", "_") for key, option in options.items()}
    for dest in (*dests.values(), "dataset", "split"):
        if getattr(args, dest) != parser.get_default(dest):
            raise CTBenchError(f"--{dest.replace('_', '-')} and --settings {args.settings} both set the analysis' "
                               "settings: give one or the other (the settings file is what the workflow runs)")
    sf = stagefile.read(args.settings, stage)
    for key, dest in dests.items():
        value, convert = sf.take(key), actions[dest].type or (lambda v: v)
        value = value if value is None else [convert(v) for v in value] if isinstance(value, list) else convert(value)
        setattr(args, dest, value)
    args.fingerprint, args.expect = sf.applied(), sf.parents


@dataclass
class Loaded:
    """A stored model on its device with the (first ``n``) samples of its split."""

    model: object
    meta: dict
    dataset: object  # torch Dataset of (float (C, H, W) in [0, 1], int)
    spec: object  # ctbench.data.DatasetSpec
    device: object
    eps: list[tuple[float, str]]
    model_sha256: str
    split: str = "test"
    location: str = ""  # the verified folder or shipped file the split was read from ("" if unknown)


def load(args: argparse.Namespace, *, need_eps: bool = True) -> Loaded:
    """Check the common options, load ``--model`` and its split (first ``--n`` samples), resolve ε."""
    from ctbench.certify.run import load_for_certification
    from ctbench.core import eps_pair as parse_eps
    from ctbench.core import resolve_device
    from ctbench.io import check_writable, sha256_file

    check_writable(args.out)  # "cannot write OUT: <why>", before any work or resumable state

    if args.n is not None and args.n < 1:
        raise CTBenchError(f"--n must be >= 1, got {args.n}")
    if args.batch < 1:
        raise CTBenchError(f"--batch must be >= 1, got {args.batch}")
    eps = [parse_eps(e) for e in args.eps] if args.eps else []
    device = resolve_device(args.device)
    model, meta, dataset, spec = load_for_certification(args.model, args.dataset, args.split, args.data_root)
    from ctbench.fingerprint import check_expected

    check_expected(args.model, (meta.get("provenance") or {}).get("fingerprints"), args.expect)
    model.to(device)
    dataset = first_n(dataset, args.n)
    if need_eps and not eps:
        cfg = meta.get("config") or {}
        default = cfg.get("eps_str", cfg.get("eps"))
        if default is None:
            raise CTBenchError(f"{args.model} records no training eps; give --eps")
        eps = [parse_eps(default)]
    return Loaded(model, meta, dataset, spec, device, eps, sha256_file(args.model), args.split,
                  _location(spec.name, args.data_root))


def _location(name: str, root) -> str:
    """Where dataset ``name`` was read from (``prepare_dataset`` is idempotent: a marker check here)."""
    from ctbench.data import prepare_dataset

    try:
        return str(prepare_dataset(name, root))
    except CTBenchError:
        return ""


def data_source(loaded: Loaded) -> str:
    """``eval_source``: the dataset's ``source`` (``ctbench data list``) and, if known, where it was read."""
    where = f"; read from {loaded.location}" if loaded.location else ""
    return f"{loaded.spec.name} {loaded.split} split: {loaded.spec.source}{where}"


def first_n(dataset, n: int | None):
    """The first ``n`` samples of ``dataset`` (all if ``n`` is None), keeping in-memory datasets in memory."""
    from torch.utils.data import Subset

    from ctbench.data import TensorImageDataset

    if n is None or n >= len(dataset):
        return dataset
    if isinstance(dataset, TensorImageDataset):
        subset = TensorImageDataset(dataset.images[:n], dataset.labels[:n], dataset.transform, dataset.classes)
        if getattr(dataset, "indices", None) is not None:  # mnist_mini: positions in the official files
            subset.indices = dataset.indices[:n]
        return subset
    return Subset(dataset, range(n))


def as_batches(data, batch: int, device=None, desc: str = ""):
    """``(x (B, C, H, W), y (B,))`` batches, in order, from a pair of tensors ``(x, y)`` (split into
    chunks of ``batch``), a ``Dataset`` of ``(x, y)`` items, or any iterable of batches (a DataLoader)."""
    import torch
    from torch.utils.data import Dataset

    from ctbench.data import make_loader
    from ctbench.logs import progress

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x_all, y_all = data
        data = [(x_all[i:i + batch], y_all[i:i + batch]) for i in range(0, x_all.shape[0], batch)]
    elif isinstance(data, Dataset):
        data = make_loader(data, batch, shuffle=False, seed=0)
    for x, y in progress(data, desc=desc, leave=False):
        yield (x, y) if device is None else (x.to(device), y.to(device))


def batch_rows(data, batch: int, device, work, *, out=None, key: dict | None = None, desc: str = ""):
    """The rows (a DataFrame) ``work(x (B, C, H, W), y (B,), start)`` returns for every batch of ``data`` (a pair
    of tensors, a Dataset, or an iterable of batches; ``start``: the batch's first position in ``data``), in
    order, through the stage runner (``ctbench.certify.runner.run_rows``): resumable from
    ``<out>.partial.npz`` when ``out`` is given (the CLI's ``--out``; ``key`` fingerprints what determines
    the rows), so a killed analysis continues after its last finished batch."""
    import torch
    from torch.utils.data import Dataset

    from ctbench.certify.runner import load_samples, run_rows

    if isinstance(data, Dataset):
        n = len(data)

        def load(b, sl):
            return load_samples(data, range(sl.start, sl.stop), device or torch.device("cpu"))
    else:
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
            pairs = list(data)  # an iterable of batches
            data = (torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])) if pairs else (
                torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        x_all, y_all = data
        n = x_all.shape[0]

        def load(b, sl):
            x, y = x_all[sl], y_all[sl]
            return (x, y) if device is None else (x.to(device), y.to(device))

    return run_rows(n, batch, load, lambda xy, b, sl: work(*xy, sl.start), out=out, key=key, desc=desc)


def resume_key(args: argparse.Namespace, loaded: Loaded, analysis: str, settings: dict) -> dict:
    """What determines an analysis' rows (the fingerprint of its resumable state, :func:`batch_rows`)."""
    return {"analysis": analysis, "settings": settings, "eps": [s for _, s in loaded.eps], "seed": args.seed,
            "model_sha256": loaded.model_sha256, "dataset": loaded.spec.name, "split": loaded.split,
            "n": len(loaded.dataset)}


def eps_major(df, radii):
    """``df`` (rows per batch and ε) ordered ε by ε (as requested), then by ``index``."""
    import numpy as np

    order = {text: i for i, (_, text) in enumerate(radii)}
    keys = np.lexsort((df["index"].to_numpy(), df["eval_eps_str"].map(order).to_numpy()))
    return df.iloc[keys].reset_index(drop=True)


def eps_list(eps) -> list[tuple[float, str]]:
    """``eps`` (a float, a string like "2/255", or a sequence of these or of ``(value, string)`` pairs)
    as ``[(value, string), ...]``."""
    from ctbench.core import eps_pair as parse_eps

    items = eps if isinstance(eps, (list, tuple)) and not _is_pair(eps) else [eps]
    return [tuple(e) if _is_pair(e) else parse_eps(e) for e in items]


def _is_pair(e) -> bool:
    return isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], (int, float)) and isinstance(e[1], str)


def identity(loaded: Loaded) -> dict:
    """The cell-identity columns of ``loaded``'s model (see module docstring)."""
    cfg = loaded.meta.get("config") or {}
    prov = loaded.meta.get("provenance") or {}
    return {
        "dataset": str(loaded.meta["dataset"]),
        "eps": str(cfg.get("eps_str", cfg.get("eps", prov.get("eps", "")))),
        "model": str(loaded.meta["model"]),
        "method": str(cfg.get("method", prov.get("method", ""))),
        "seed": str(cfg.get("seed", prov.get("seed", ""))),
        "variant": str(cfg.get("variant", "") or ""),
    }


def with_identity(df, loaded: Loaded):
    """``df`` with the identity and data columns (module docstring) in front."""
    ident = {**identity(loaded), "eval_dataset": loaded.spec.name, "eval_split": loaded.split,
             "eval_n": len(loaded.dataset), "eval_source": data_source(loaded)}
    for i, (name, value) in enumerate(ident.items()):
        df.insert(i, name, value)
    return df


def write(df, args: argparse.Namespace, loaded: Loaded, analysis: str, settings: dict) -> None:
    """Write ``df`` to ``--out`` with the provenance (``ctbench.analysis.tables.write_table``)."""
    from ctbench.analysis.tables import write_table

    meta = loaded.meta
    provenance = {
        "analysis": analysis,
        "model_file": str(args.model),
        "model_sha256": loaded.model_sha256,
        "model_fingerprints": (meta.get("provenance") or {}).get("fingerprints", {}),
        "model_config": meta.get("config") or {},
        "fingerprint": args.fingerprint,
        "identity": identity(loaded),
        "dataset": loaded.spec.name,
        "split": args.split,
        "n": len(loaded.dataset),
        "data_source": data_source(loaded),
        "data_location": loaded.location,
        "eps": [s for _, s in loaded.eps],
        "seed": args.seed,
        "device": str(loaded.device),
        "settings": settings,
    }
    write_table(df, args.out, provenance)
    from ctbench.certify import resume

    resume.state_path(args.out).unlink(missing_ok=True)  # the resumable state of batch_rows, done with
    logger.info("wrote %s (%d rows)", args.out, len(df))
