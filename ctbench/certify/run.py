"""``ctbench certify`` from files: model + dataset loading and checks, provenance (ε and device: ``ctbench.core``)."""

from __future__ import annotations

from pathlib import Path

from ctbench.certify.cascade import CertifySettings, certify_model, check_writable
from ctbench.core import eps_pair, eps_token, resolve_device
from ctbench.errors import CTBenchError
from ctbench.io import sha256_file


def load_for_certification(model_path, dataset_name: str | None, split: str, data_root=None):
    """Load ``model.pt`` and the dataset split; check that they fit. Returns (model, meta, dataset, spec)."""
    from ctbench.data import get_spec, load_dataset
    from ctbench.modelfile import load_model

    model, meta = load_model(model_path)
    model_ds = get_spec(meta["dataset"])
    name = dataset_name or meta["dataset"]
    spec = get_spec(name)
    if tuple(spec.shape) != tuple(model_ds.shape) or spec.num_classes != model_ds.num_classes:
        raise CTBenchError(
            f"dataset {name} (shape {tuple(spec.shape)}, {spec.num_classes} classes) does not fit "
            f"the model, trained on {meta['dataset']} (shape {tuple(model_ds.shape)}, "
            f"{model_ds.num_classes} classes)"
        )
    dataset = load_dataset(name, split, data_root, augment=False)
    return model, meta, dataset, spec


def select_indices(n_total: int, start: int, n: int | None) -> range:
    if start < 0 or start >= n_total:
        raise CTBenchError(f"--start {start} is outside the split (0..{n_total - 1})")
    if n is not None and n < 1:
        raise CTBenchError(f"--n must be >= 1, got {n}")
    stop = n_total if n is None else min(n_total, start + n)
    return range(start, stop)


def cell_identity(meta: dict) -> dict:
    """The workflow cell a model was trained as (dataset, ε token, model, method, variant, seed)."""
    cfg = meta.get("config") or {}
    eps = cfg.get("eps_str")
    return {"dataset": cfg.get("dataset", meta.get("dataset")), "eps": eps_token(eps) if eps else None,
            "model": meta.get("model"), "method": cfg.get("method"), "variant": cfg.get("variant", ""),
            "seed": cfg.get("seed")}


def model_attrs(model_path, meta: dict, dataset: str, split: str, *, fingerprint_stage: str | None = None,
                fingerprint: str | None = None, expect: dict | None = None, extra_fingerprints=None) -> dict:
    """Root attributes naming the model, its cell and the fingerprints of everything the output is made from.

    ``expect`` (stage → fingerprint) refuses a model made for another configuration; ``fingerprint`` is
    recorded as ``fingerprints[fingerprint_stage]`` next to the model's own (train, select) and
    ``extra_fingerprints`` (e.g. the certificates' ``certify`` for an attack)."""
    from ctbench.fingerprint import check_expected

    cfg = meta.get("config") or {}
    prov = meta.get("provenance") or {}
    fingerprints = {**(prov.get("fingerprints") or {}), **(extra_fingerprints or {})}
    check_expected(model_path, fingerprints, expect or {})
    if fingerprint:
        fingerprints[fingerprint_stage] = fingerprint
    return {
        "cell": cell_identity(meta),
        "fingerprints": fingerprints,
        "model_file": str(model_path),
        "model_sha256": sha256_file(model_path),
        "model": meta["model"],
        "model_dataset": meta["dataset"],
        "dataset": dataset,
        "split": split,
        "method": str(cfg.get("method", prov.get("method", ""))),
        "seed": str(cfg.get("seed", prov.get("seed", ""))),
        "config": cfg,
        "model_provenance": prov,
    }


def certify_file(
    model_path,
    out,
    *,
    eps: str | float,
    dataset: str | None = None,
    split: str = "test",
    n: int | None = None,
    start: int = 0,
    device: str = "auto",
    data_root=None,
    hook=None,
    fingerprint: str | None = None,
    expect: dict | None = None,
    **settings,
) -> dict:
    """``ctbench certify``: model file + dataset split + ε + settings → ``out`` (certify.h5)."""
    value, text = eps_pair(eps)
    s = CertifySettings(eps=value, eps_str=text, **settings)
    dev = resolve_device(device)
    out = Path(out)
    check_writable(out)
    model, meta, ds, spec = load_for_certification(model_path, dataset, split, data_root)
    indices = select_indices(len(ds), start, n)
    attrs = model_attrs(model_path, meta, spec.name, split, fingerprint_stage="certify", fingerprint=fingerprint,
                        expect=expect)
    return certify_model(
        model, ds, indices, s, out, num_classes=spec.num_classes, attrs=attrs, device=dev, hook=hook
    )
