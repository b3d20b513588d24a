"""Certification cascade and adversarial evaluation (see docs/certificates.md).

* :func:`certify_file` (``run.py``: files, checks, provenance) / :func:`certify_model` — the cascade
  (``cascade.py``) over the stages in
  :data:`CERTIFY_STAGES` (``stages.py``), writing ``certify.h5`` (``hdf5.py``);
* :func:`bab_verify` (``bab.py``) and :func:`milp_verify` (``milp.py``) — complete verifiers;
* :func:`attack_file` (``attack.py``) — PGD / AutoAttack evaluation → ``attack.h5``;
* :func:`summarize` (``summarize.py``) — one table row per cell.
"""

from ctbench.certify.cascade import CertifySettings, certify_model
from ctbench.certify.run import certify_file
from ctbench.certify.stages import CERTIFY_STAGES, DEFAULT_STAGES
from ctbench.certify.status import STATUS_MAPPING, Status
from ctbench.core import eps_pair as parse_eps  # (value, written form)

__all__ = [
    "CERTIFY_STAGES",
    "DEFAULT_STAGES",
    "STATUS_MAPPING",
    "CertifySettings",
    "Status",
    "certify_file",
    "certify_model",
    "parse_eps",
]
