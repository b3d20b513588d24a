"""Adversarial evaluation (``ctbench attack`` → ``attack.h5``): PGD with restarts or AutoAttack.

* ``pgd``: CTBench's ``adv_whitebox`` (``ctbench.attacks.pgd_attack``: random start, restarts, the
  best point kept, sign steps); paper: 200 steps, 5 restarts for certified models.
* ``autoattack``: AutoAttack "standard" (Croce & Hein 2020) through ``torchattacks.AutoAttack``, for
  adversarially trained models.
* ``pgd,autoattack``: several attacks in that order, each on the samples the previous ones did not
  break (``broken_by_<attack>`` records which one did).

Every attack point is projected into the float32 box rounded *inward* of the float64 ε-box and counted
only if its margin is < 0 in float32 and in float64. A sample is adversarially robust
(``adv_correct``) if it is classified correctly and neither the attack nor — with ``certificates`` — a
verifier counterexample (status ``falsified`` in ``certify.h5``) breaks it (paper's adversarial
accuracy). A sample that is certified there but broken here is a soundness bug: it is counted in the
``certified_but_attacked`` attribute and logged as an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctbench.certify import hdf5, resume
from ctbench.certify.cascade import boxes, check_writable
from ctbench.certify.run import load_for_certification, model_attrs, select_indices
from ctbench.certify.runner import BatchRun, BatchState, load_samples
from ctbench.certify.stages import min_margin
from ctbench.certify.status import CERTIFIED_VALUES, Status
from ctbench.core import config_default, eps_pair, resolve_device
from ctbench.errors import CTBenchError

logger = logging.getLogger(__name__)

ATTACKS = ("pgd", "autoattack")


def _autoattack(model, x, y, eps, num_classes, seed):
    import torchattacks

    atk = torchattacks.AutoAttack(
        model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=seed
    )
    return atk(x, y)


def attack_batch(model, model64, x, y, eps, *, attack, steps, restarts, loss, num_classes, seed, check_every=10):
    """(broken (B,) bool, margin at the attack point (B,) float) for correctly classified inputs x. PGD stops
    attacking a sample once its best point breaks it (checked every ``check_every`` steps; 0: at the end)."""
    lo64, hi64, _, _, lo_in, hi_in = boxes(x, eps)
    if attack == "pgd":
        from ctbench.attacks import pgd_attack

        def broken(points, idx):  # the criterion below, on the samples idx
            with torch.no_grad():
                return (min_margin(model(points), y[idx]) < 0) & (min_margin(model64(points.double()), y[idx]) < 0)

        x_adv = pgd_attack(model, x, y, lo_in, hi_in, steps=steps, restarts=restarts, loss=loss,
                           done=broken if check_every else None, check_every=check_every or 1)
    else:
        x_adv = _autoattack(model, x, y, eps, num_classes, seed).detach()
    x_adv = torch.max(torch.min(x_adv.to(x.dtype), hi_in), lo_in)
    with torch.no_grad():
        m32 = min_margin(model(x_adv), y)
        m64 = min_margin(model64(x_adv.double()), y)
    return (m32 < 0) & (m64 < 0), m32


@dataclass(frozen=True)
class AttackSettings:
    """What an attack run applies (``attack_settings`` of attack.h5, part of its resume fingerprint); the
    defaults a grid configuration sets live in its schema (``ctbench.core.config_default``)."""

    attack: str = "pgd"  #: pgd, autoattack, or both comma-separated (in that order)
    steps: int = config_default("attack.steps")
    restarts: int = config_default("attack.restarts")
    loss: str = "ce"
    seed: int = 0
    batch_size: int = 256
    check_every: int = 10  #: PGD steps between checks that drop broken samples (0: every sample every step)

    @property
    def attacks(self) -> list[str]:
        if self.check_every < 0:
            raise CTBenchError(f"check_every must be >= 0, got {self.check_every}")
        return _check_attacks(self.attack, self.steps, self.restarts, self.batch_size)

    def record(self) -> dict:
        attacks = self.attacks
        return {"attack": ",".join(attacks), "steps": self.steps, "restarts": self.restarts, "loss": self.loss,
                "seed": self.seed, "batch_size": self.batch_size, "check_every": self.check_every,
                "autoattack_version": "standard" if "autoattack" in attacks else None}


def attack_file(model_path, out, *, eps, dataset: str | None = None, split: str = "test", n: int | None = None,
                start: int = 0, device: str = "auto", certificates=None, data_root=None, hook=None,
                resume_state: bool = True, fingerprint: str | None = None, expect: dict | None = None,
                **settings) -> dict:
    """``ctbench attack``; returns counts (also written as attributes of ``out``). ``settings``: the fields of
    :class:`AttackSettings` (attack, steps, restarts, loss, seed, batch_size).

    Resumable: after every batch the per-sample vectors go to ``<out>.partial.npz`` (with a fingerprint
    of model, data range, ε and settings); a rerun continues after the last finished batch, and with
    the per-batch seeds gives the same file as an uninterrupted run (except timing). ``hook(event,
    info)`` is called after each persisted batch (progress, or a simulated kill in tests).
    """
    s = AttackSettings(**settings)
    attacks = s.attacks
    value, text = eps_pair(eps)
    dev = resolve_device(device)
    out = Path(out)
    check_writable(out)
    model, meta, ds, spec = load_for_certification(model_path, dataset, split, data_root)
    indices = np.asarray(select_indices(len(ds), start, n), dtype=np.int64)
    cert, cert_attrs = _read_certificates(certificates) if certificates is not None else (None, {})
    N = len(indices)
    recorded = s.record()
    attrs_model = _model_attrs(model_path, meta, spec.name, split, fingerprint, expect, certificates, cert_attrs)
    fp = resume.fingerprint(
        {
            "settings": recorded,
            "eps": value,
            "indices": [int(indices[0]) if N else 0, N],
            "model_sha256": attrs_model.get("model_sha256"),
            "dataset": spec.name,
            "split": split,
            "format": hdf5.ATTACK_FORMAT,
        }
    )
    st = _AttackState(N, attacks)
    run = BatchRun(out, st, fp, n=N, batch_size=s.batch_size, desc=f"attack {out.name}", resume_state=resume_state,
                   hook=hook)
    t_all = time.perf_counter()
    attacker = _Attacker(model, dev, value, s, spec)
    run.run(lambda b, sl: load_samples(ds, indices[sl], dev), lambda xy, b, sl: attacker.batch(st, *xy, b, sl))
    datasets, res, extra = _results(st, indices, cert, certificates)
    attrs = {
        **hdf5.provenance_attrs(hdf5.ATTACK_FORMAT),
        **attrs_model,
        "eps": text,
        "eps_float": value,
        "attack": ",".join(attacks),
        "attack_settings": recorded,
        "device": str(dev),
        "wall_time_s": time.perf_counter() - t_all,
        **extra,
        **{f"count_{k}": v for k, v in res.items()},
    }
    run.finish(lambda: hdf5.write_h5(out, datasets, attrs, enum_datasets=()))
    return {**res, **extra}


def _model_attrs(model_path, meta, dataset, split, fingerprint, expect, certificates, cert_attrs) -> dict:
    """The model's provenance attributes (with the certificates' fingerprint); certificates of another model
    are refused."""
    cert_fp = {"certify": cert_attrs["fingerprints"]["certify"]} if "certify" in (
        cert_attrs.get("fingerprints") or {}) else {}
    attrs_model = model_attrs(model_path, meta, dataset, split, fingerprint_stage="attack", fingerprint=fingerprint,
                              expect=expect, extra_fingerprints=cert_fp)
    if certificates is not None and cert_attrs.get("model_sha256") != attrs_model["model_sha256"]:
        raise CTBenchError(f"{certificates} certifies another model than {model_path} (model sha256 differs); "
                           "certify this model first")
    return attrs_model


def _check_attacks(attack: str, steps: int, restarts: int, batch_size: int) -> list[str]:
    """The attacks named in ``attack`` (comma-separated, in order); a bad value or setting: one clear error."""
    attacks = [a.strip() for a in str(attack).split(",") if a.strip()]
    if not attacks or len(set(attacks)) != len(attacks) or any(a not in ATTACKS for a in attacks):
        known = ", ".join(ATTACKS)
        raise CTBenchError(f"bad --attack {attack!r}: give one or more of {known}, comma-separated")
    if steps < 0 or restarts < 1 or batch_size < 1:
        raise CTBenchError("need steps >= 0, restarts >= 1 and batch size >= 1")
    return attacks


class _Attacker:
    """The attacks of one run, applied batch by batch to an :class:`_AttackState`."""

    def __init__(self, model, dev, eps, s: AttackSettings, spec):
        import copy

        self.model = model.to(dev).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model64 = copy.deepcopy(self.model).double().eval()
        self.attacks, self.eps, self.steps, self.restarts, self.loss = s.attacks, eps, s.steps, s.restarts, s.loss
        self.seed, self.spec, self.check_every = s.seed, spec, s.check_every

    def batch(self, st: _AttackState, x, y, b: int, sl: slice) -> None:
        """Batch ``b`` (rows ``sl``): clean prediction, then each attack on the samples not broken yet."""
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.model(x)
        if logits.shape[1] != self.spec.num_classes:
            raise CTBenchError(f"model has {logits.shape[1]} outputs but {self.spec.name} has "
                               f"{self.spec.num_classes} classes")
        p = logits.argmax(1)
        ok = p == y
        m = min_margin(logits, y)
        remaining = ok.nonzero().flatten()
        bb = torch.zeros_like(ok)
        for a_i, name in enumerate(self.attacks):  # each attack only on the samples not broken yet
            if remaining.numel() == 0:
                break
            torch.manual_seed(self.seed + 7919 * b + a_i)  # per batch: a resumed run gives the same result
            br, madv = attack_batch(self.model, self.model64, x[remaining], y[remaining], self.eps, attack=name,
                                    steps=self.steps, restarts=self.restarts, loss=self.loss,
                                    num_classes=self.spec.num_classes, seed=self.seed, check_every=self.check_every)
            m[remaining] = torch.minimum(m[remaining], madv)
            newly = torch.zeros_like(ok)
            newly[remaining[br]] = True
            bb |= newly
            st.per_attack[name][sl] = newly.cpu().numpy()
            remaining = remaining[~br]
        st.broken[sl] = bb.cpu().numpy()
        st.label[sl], st.pred[sl] = y.cpu().numpy(), p.cpu().numpy()
        st.nat_correct[sl] = ok.cpu().numpy()
        st.adv_margin[sl] = m.cpu().numpy()
        st.time_s[sl] = (time.perf_counter() - t0) / len(y)


def _results(st: _AttackState, indices, cert, certificates) -> tuple[dict, dict, dict]:
    """``(datasets of attack.h5, counts, extra attributes)``; with certificates, a verifier counterexample
    also breaks a sample, and a certified sample that the attack broke is a soundness bug (logged)."""
    label, pred, nat_correct, broken = st.label, st.pred, st.nat_correct, st.broken
    per_attack, adv_margin, time_s = st.per_attack, st.adv_margin, st.time_s
    adv_correct = nat_correct & ~broken
    datasets = {
        "sample_index": indices,
        "label": label,
        "pred": pred,
        "nat_correct": nat_correct,
        "attack_broken": broken,
        **{f"broken_by_{name}": v for name, v in per_attack.items()},
        "adv_margin": adv_margin,
    }
    extra = {}
    if cert is not None:
        status = _align(cert, indices)
        falsified = status == int(Status.FALSIFIED)
        certified = np.isin(status, CERTIFIED_VALUES)
        bad = int((certified & broken).sum())
        if bad:
            logger.error("SOUNDNESS: %d samples certified in %s are broken by the attack", bad, certificates)
        adv_correct = adv_correct & ~falsified
        datasets["verifier_falsified"] = falsified
        extra = {"certificates": str(certificates), "certified_but_attacked": bad}
    datasets["adv_correct"] = adv_correct
    datasets["time_s"] = time_s
    res = {
        "n": len(indices),
        "nat_correct": int(nat_correct.sum()),
        "attack_broken": int(broken.sum()),
        "adv_correct": int(adv_correct.sum()),
    }
    return datasets, res, extra


class _AttackState(BatchState):
    """The per-sample vectors of an attack run and how many batches are done (see :mod:`.runner`)."""

    def __init__(self, N: int, attacks: list[str]):
        self.label, self.pred = np.zeros(N, np.int16), np.zeros(N, np.int16)
        self.nat_correct, self.broken = np.zeros(N, bool), np.zeros(N, bool)
        self.per_attack = {name: np.zeros(N, bool) for name in attacks}  # first attack that broke the sample
        self.adv_margin, self.time_s = np.full(N, np.nan, np.float32), np.zeros(N, np.float32)
        self.batches_done = 0

    FIELDS = ("label", "pred", "nat_correct", "broken", "adv_margin", "time_s")

    def names(self) -> list[str]:
        return [*self.FIELDS, *(f"broken_by_{a}" for a in self.per_attack), "batches_done"]

    def arrays(self) -> dict[str, np.ndarray]:
        d = {k: getattr(self, k) for k in self.FIELDS}
        d.update({f"broken_by_{a}": v for a, v in self.per_attack.items()})
        return {**d, "batches_done": np.array(self.batches_done)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        super().restore(arrays)
        for a in self.per_attack:
            self.per_attack[a] = arrays[f"broken_by_{a}"]


def _read_certificates(path):
    data, attrs = hdf5.read_h5(path)
    if attrs.get("format") != hdf5.CERTIFY_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench certificate file")
    return data, attrs


def _align(cert: dict, indices: np.ndarray) -> np.ndarray:
    """Status from certify.h5 for each sample index (UNKNOWN where the file has no row)."""
    lookup = dict(zip(cert["sample_index"].tolist(), cert["status"].tolist(), strict=True))
    return np.array([lookup.get(int(i), int(Status.UNKNOWN)) for i in indices], dtype=np.int64)
