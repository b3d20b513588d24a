"""Stage fingerprints: what each output of a cell was made from, as one hash per stage.

Each stage's fingerprint hashes its own settings and version with the fingerprints of the stages it
reads, so a change anywhere upstream changes every fingerprint downstream::

    train      = H(resolved training config, run-length limits, versions.train)
    select     = H(train, versions.select)
    certify    = H(select, certification settings, versions.certify)
    attack     = H(select, certify, attack settings, versions.attack)
    summarize  = H(certify, attack, versions.summarize)
    <analysis> = H(select, analysis settings, versions.analysis)

The workflow passes each rule its stage's fingerprint as a ``params`` entry (so Snakemake re-runs a stage
whose fingerprint changed, whether or not the files between still exist), the job writes it into its
output (``model.pt`` provenance, ``certify.h5`` / ``attack.h5`` attributes, ``metrics.json``), and
``ctbench report`` refuses cells whose fingerprint is not the current configuration's.
"""

from __future__ import annotations

from ctbench.core import json_sha256

#: Length of the hex digests (96 bits: collisions are not a concern for a results tree).
DIGITS = 24


def digest(obj) -> str:
    """Hex digest of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    return json_sha256(obj)[:DIGITS]


#: Hyperparameters added after results existed, whose null reproduces the runs made before them: left out of
#: the training fingerprint while null, so adding them to the schema re-runs nothing.
LATER_KEYS = ("val_every", "val_samples")


def train_fingerprint(config: dict, limits: dict, version: int) -> str:
    """Fingerprint of a training run: the resolved config, the run-length limits, the stage version."""
    config = {k: v for k, v in config.items() if not (k in LATER_KEYS and v is None)}
    return digest({"stage": "train", "version": int(version), "config": config,
                   "limits": {k: limits.get(k) for k in ("subset", "max_steps")}})


def stage_fingerprint(stage: str, version: int, parents: dict, settings: dict | None = None) -> str:
    """Fingerprint of a downstream stage from its parents' fingerprints and its own settings."""
    return digest({"stage": stage, "version": int(version), "parents": parents, "settings": settings or {}})


def parse_expect(items: list[str] | None) -> dict[str, str]:
    """``["train=ab12…", "select=cd34…"]`` (the ``--expect`` options) → ``{"train": "ab12…", ...}``."""
    from ctbench.errors import CTBenchError

    out = {}
    for item in items or []:
        stage, sep, fp = item.partition("=")
        if not sep or not stage or not fp:
            raise CTBenchError(f"malformed --expect {item!r}: expected STAGE=FINGERPRINT")
        out[stage.strip()] = fp.strip()
    return out


def check_expected(path, have: dict | None, expect: dict[str, str]) -> None:
    """Refuse an input whose recorded fingerprints are not the expected ones (made for another config)."""
    from ctbench.errors import CTBenchError

    have = have or {}
    for stage, fp in expect.items():
        if have.get(stage) != fp:
            raise CTBenchError(
                f"{path} was made for another configuration ({stage} fingerprint {have.get(stage) or 'none'}, "
                f"expected {fp}); re-run the rule that makes it, e.g. snakemake --forcerun {stage}"
            )
