"""External complete verifiers behind one interface, fed with VNN-COMP files (:mod:`.vnncomp`).

=========  =====================================================================================
name       how it is found and run
=========  =====================================================================================
abCROWN    alpha-beta-CROWN (Wang et al. 2021; the verifier the original CTBench code uses now).
           Not on PyPI: point ``CTBENCH_ABCROWN`` at its ``complete_verifier/abcrown.py`` (or that
           folder), or make ``abcrown`` / ``complete_verifier`` importable. Run as a subprocess,
           ``python abcrown.py --config <generated yaml>``, one sample per call, with the ONNX
           model, the sample's VNNLIB file, ``bab.timeout`` = the sample's remaining budget, and
           ``general.results_file`` / ``attack.cex_path`` read back afterwards.
           ``CTBENCH_ABCROWN_PYTHON`` picks its interpreter (it usually lives in its own
           environment); the ``abcrown_config`` setting names a YAML file merged under the
           generated keys (solver batch sizes, branching, …).
Marabou    Marabou (Wu et al. 2024) from PyPI (``maraboupy``), in this process. SMT/simplex based:
           exact enough for small networks, far too slow for CNN7 — useful as an independent
           complete verifier to cross-check BaB and MILP.
=========  =====================================================================================

Both answer ``unsat`` (→ certified by that stage), ``sat`` with a counterexample (→ falsified only
after the cascade re-checks the point on its own model), ``timeout`` or ``unknown``. An ``unsat``
is trusted as the paper trusts MN-BaB: the stage that decided it is recorded per sample, so a
reader can filter on it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ctbench.certify import vnncomp
from ctbench.errors import CTBenchError
from ctbench.registry import Registry

logger = logging.getLogger(__name__)

#: Seconds an abCROWN subprocess may run past its ``bab.timeout`` (start-up, model load) before it is killed.
ABCROWN_GRACE_S = 120.0


@dataclass
class ExternalAnswer:
    """One verifier call. ``z``: flat counterexample in the exported network's input space, or None."""

    verdict: str  # one of vnncomp.VERDICTS
    z: np.ndarray | None = None
    detail: str = ""


@dataclass(frozen=True)
class ExternalVerifier:
    name: str
    available: object  # () -> bool
    #: ``run(onnx, vnnlib, input_shape, workdir, timeout_s, settings, device) -> ExternalAnswer``
    run: object


EXTERNAL_VERIFIERS: Registry[ExternalVerifier] = Registry("external verifier")


def _register(v: ExternalVerifier) -> ExternalVerifier:
    EXTERNAL_VERIFIERS.register(v.name)(v)
    return v


# -- alpha-beta-CROWN ------------------------------------------------------------------------------


def locate_abcrown() -> Path | None:
    """Path of alpha-beta-CROWN's ``abcrown.py``, or None. ``CTBENCH_ABCROWN`` wins and must exist."""
    env = os.environ.get("CTBENCH_ABCROWN")
    if env:
        p = Path(env).expanduser()
        p = p / "abcrown.py" if p.is_dir() else p
        if not p.is_file():
            raise CTBenchError(f"CTBENCH_ABCROWN={env} does not point to abcrown.py or a folder holding it")
        return p.resolve()
    for mod in ("abcrown", "complete_verifier"):
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        cand = origin if origin.name == "abcrown.py" else origin.parent / "abcrown.py"
        if cand.is_file():
            return cand.resolve()
    return None


def abcrown_available() -> bool:
    """Whether alpha-beta-CROWN can be found; a ``CTBENCH_ABCROWN`` that points nowhere is an error."""
    return locate_abcrown() is not None


def abcrown_config(onnx, vnnlib, input_shape, workdir: Path, timeout_s: float, device: str, base: dict) -> dict:
    """The generated alpha-beta-CROWN configuration (``base`` merged under it, ours wins)."""
    ours = {
        "general": {
            "device": device,
            "results_file": str(workdir / "abcrown_result.txt"),
            "save_adv_example": True,
            "complete_verifier": "bab",
        },
        "model": {"onnx_path": str(onnx), "input_shape": [-1, *map(int, input_shape)]},
        "specification": {"vnnlib_path": str(vnnlib)},
        "attack": {"cex_path": str(workdir / "abcrown_cex.txt")},
        "bab": {"timeout": float(timeout_s)},
    }
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in ours.items():
        merged.setdefault(section, {})
        if not isinstance(merged[section], dict):
            raise CTBenchError(f"abcrown base config: section {section!r} must be a mapping")
        merged[section].update(values)
    return merged


def load_base_config(path: str) -> dict:
    """The user's alpha-beta-CROWN YAML (``--abcrown-config``) as a mapping; ``{}`` for no path."""
    if not path:
        return {}
    try:
        base = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CTBenchError(f"cannot read the abcrown config {path}: {e}") from None
    if not isinstance(base, dict):
        raise CTBenchError(f"abcrown config {path} must be a YAML mapping")
    return base


def _run_abcrown(onnx, vnnlib, input_shape, workdir: Path, timeout_s: float, settings, device: str) -> ExternalAnswer:
    script = locate_abcrown()
    if script is None:
        raise CTBenchError("alpha-beta-CROWN not found (set CTBENCH_ABCROWN to its abcrown.py)")
    base = load_base_config(getattr(settings, "abcrown_config", ""))
    cfg = abcrown_config(onnx, vnnlib, input_shape, workdir, timeout_s, device, base)
    result, cex = Path(cfg["general"]["results_file"]), Path(cfg["attack"]["cex_path"])
    for f in (result, cex):
        f.unlink(missing_ok=True)
    cfg_path = workdir / "abcrown_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    python = os.environ.get("CTBENCH_ABCROWN_PYTHON") or sys.executable
    cmd = [python, str(script), "--config", str(cfg_path)]
    log = workdir / "abcrown.log"
    try:
        with open(log, "wb") as out:
            proc = subprocess.run(
                cmd, cwd=script.parent, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s + ABCROWN_GRACE_S
            )
    except subprocess.TimeoutExpired:
        return ExternalAnswer("timeout", detail="alpha-beta-CROWN exceeded its budget and was killed")
    except OSError as e:
        raise CTBenchError(f"cannot run alpha-beta-CROWN ({' '.join(cmd)}): {e}") from None
    if not result.is_file():
        tail = log.read_text(errors="replace")[-2000:]
        logger.warning("alpha-beta-CROWN wrote no result (exit %s); log tail:\n%s", proc.returncode, tail)
        return ExternalAnswer("error", detail=f"exit {proc.returncode}, no results file")
    text = result.read_text(errors="replace")
    verdict, values = vnncomp.parse_answer(text)
    if verdict == "sat" and not values["X"] and cex.is_file():
        _, values = vnncomp.parse_answer("sat\n" + cex.read_text(errors="replace"))
    n = int(np.prod(input_shape))
    return ExternalAnswer(verdict, vnncomp.assignment_vector(values["X"], n) if verdict == "sat" else None)


_register(ExternalVerifier("abCROWN", abcrown_available, _run_abcrown))


# -- Marabou ---------------------------------------------------------------------------------------


def marabou_available() -> bool:
    return importlib.util.find_spec("maraboupy") is not None


@contextlib.contextmanager
def _quiet_stdout():
    """Silence C++-level prints to fd 1 (Marabou reports every property it loads)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


_MARABOU_NETWORKS: dict[tuple[str, float], object] = {}


def _marabou_network(onnx: Path):
    key = (str(onnx), onnx.stat().st_mtime)
    if key not in _MARABOU_NETWORKS:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Tensorflow parser is unavailable"
            from maraboupy import Marabou
        _MARABOU_NETWORKS.clear()
        with _quiet_stdout():
            _MARABOU_NETWORKS[key] = Marabou.read_onnx(str(onnx))
    return _MARABOU_NETWORKS[key]


def _run_marabou(onnx, vnnlib, input_shape, workdir, timeout_s: float, settings, device) -> ExternalAnswer:
    net = _marabou_network(Path(onnx))  # imports maraboupy quietly
    from maraboupy import Marabou

    options = Marabou.createOptions(verbosity=0, timeoutInSeconds=max(1, int(timeout_s)))
    with _quiet_stdout():
        exit_code, vals, _ = net.solve(propertyFilename=str(vnnlib), options=options, verbose=False)
    verdict = {"unsat": "unsat", "sat": "sat", "TIMEOUT": "timeout"}.get(exit_code, "unknown")
    z = None
    if verdict == "sat":
        z = np.array([vals[int(v)] for v in np.asarray(net.inputVars[0]).flatten()], dtype=np.float64)
    return ExternalAnswer(verdict, z, detail=str(exit_code))


_register(ExternalVerifier("Marabou", marabou_available, _run_marabou))


# -- the model's files, shared by all samples of one run -------------------------------------------


class Workspace:
    """A temporary folder with the exported ONNX model; one per certification run (and Context)."""

    def __init__(self, model, input_shape: tuple[int, ...]):
        self._tmp = tempfile.TemporaryDirectory(prefix="ctbench-vnncomp-")
        self.dir = Path(self._tmp.name)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.norm, _ = vnncomp.split_normalization(model)
        self.onnx = vnncomp.export_onnx(model, self.input_shape, self.dir / "model.onnx")

    def vnnlib(self, lower64, upper64, label: int, num_classes: int, tag: str) -> Path:
        lo, hi = vnncomp.normalized_box(self.norm, lower64, upper64)
        return vnncomp.write_vnnlib(self.dir / f"{tag}.vnnlib", lo, hi, label, num_classes)


def verify_one(
    name: str,
    workspace: Workspace,
    lower64,
    upper64,
    label: int,
    num_classes: int,
    *,
    deadline: float,
    settings=None,
    device: str = "cpu",
) -> ExternalAnswer:
    """Ask verifier ``name`` about one sample's box (pixel space, (1, *in) float64) and label."""
    verifier = EXTERNAL_VERIFIERS.get(name)
    remaining = deadline - time.monotonic()
    if remaining < 1.0:
        return ExternalAnswer("timeout", detail="no time left")
    path = workspace.vnnlib(lower64, upper64, label, num_classes, tag=f"{name}_query")
    try:
        return verifier.run(workspace.onnx, path, workspace.input_shape, workspace.dir, remaining, settings, device)
    finally:
        path.unlink(missing_ok=True)
