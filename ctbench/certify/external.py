"""External complete verifiers behind one interface, fed with VNN-COMP files (:mod:`.vnncomp`).

=========  =====================================================================================
name       how it is found and run
=========  =====================================================================================
abCROWN    alpha-beta-CROWN (Wang et al. 2021; the verifier the original CTBench code uses now).
           Not on PyPI: point ``CTBENCH_ABCROWN`` at its ``complete_verifier/abcrown.py`` (or that
           folder), or make ``abcrown`` / ``complete_verifier`` importable;
           ``CTBENCH_ABCROWN_PYTHON`` picks its interpreter (it usually lives in its own
           environment). **One process per call for many samples**, through its CSV batch mode: a
           CSV of ``onnx, vnnlib, timeout`` rows (each sample's remaining budget), results read back
           from its per-row results pickle, counterexamples kept per row by our ``adv_saver`` plugin
           (``abcrown_adv_saver.py``; its stock saver overwrites one file). Its run is confined
           (``process.py``): own process group, killed with ours on any exit, the whole batch
           stopped at the sum of the budgets + ``ABCROWN_GRACE_S``. A process that dies on a row
           (killed for memory, say) leaves that row undecided and a new one takes the rows after it.
           Its ONNX → PyTorch conversion check only *prints* "Model might not be converted correctly"
           and goes on to verify the wrong model: that line (or "Not able to check model's conversion
           correctness") stops the run and fails the certification with an error — never a
           certificate. ``abcrown_config`` (a YAML) is merged under the generated keys; without one,
           :data:`BUILTIN_BASE` for the device (the same as ``config/abcrown/{cpu,gpu}.yaml``).
Marabou    Marabou (Wu et al. 2024) from PyPI (``maraboupy``), in this process, one sample at a
           time. SMT/simplex based: exact enough for small networks, far too slow for CNN7 — useful
           as an independent complete verifier to cross-check BaB and MILP.
=========  =====================================================================================

Both answer ``unsat`` (→ certified by that stage), ``sat`` with a counterexample (→ falsified only
after the cascade re-checks the point on its own model), ``timeout`` or ``unknown``. An ``unsat``
is trusted as the paper trusts MN-BaB: the stage that decided it is recorded per sample, so a
reader can filter on it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ctbench.certify import vnncomp
from ctbench.certify.process import run_in_group
from ctbench.errors import CTBenchError
from ctbench.io import quiet_stdout
from ctbench.registry import Registry

logger = logging.getLogger(__name__)

#: Seconds an abCROWN batch may run past the sum of its rows' budgets (start-up, model loading, BaB's
#: overshoot of a round) before it is killed; rows it did not finish are timeouts.
ABCROWN_GRACE_S = 120.0
#: Lines of alpha-beta-CROWN's log that make its answers worthless (its ONNX conversion check).
CONVERSION_ALARMS = ("Model might not be converted correctly", "Not able to check model's conversion correctness")
#: alpha-beta-CROWN settings used when no ``abcrown_config`` is given; ``config/abcrown/cpu.yaml`` and
#: ``gpu.yaml`` spell out the same, with comments (a test keeps them equal). Its own PGD runs before
#: verification and cannot be interrupted: on the CPU a short one only where alpha-CROWN fails ("after"),
#: on a GPU a short one in the "middle" position (after CROWN fails, before alpha-CROWN); never the
#: original's 30 x 100 before everything. Its time is charged to the row's budget.
BUILTIN_BASE = {
    "cpu": {
        "solver": {"alpha-crown": {"iteration": 20}},
        "bab": {"branching": {"method": "kfsb"}},
        "attack": {"pgd_order": "after", "pgd_steps": 50, "pgd_restarts": 5},
    },
    "cuda": {
        "solver": {"alpha-crown": {"iteration": 100}},
        "bab": {"branching": {"method": "kfsb"}},
        "attack": {"pgd_order": "middle", "pgd_steps": 50, "pgd_restarts": 10},
    },
}


@dataclass
class ExternalAnswer:
    """One verifier answer. ``z``: flat counterexample in the exported network's input space, or None."""

    verdict: str  # one of vnncomp.VERDICTS
    z: np.ndarray | None = None
    detail: str = ""
    seconds: float = 0.0  #: the verifier's own time for this sample (batch mode: its row)


@dataclass(frozen=True)
class ExternalVerifier:
    name: str
    available: object  # () -> bool
    #: ``run(onnx, [(vnnlib, budget_s)], input_shape, workdir, settings, device) -> [ExternalAnswer]``; a
    #: verifier without a batch mode answers one query after the other, each within its own budget
    run: object
    #: one process for many samples (the cascade hands it a whole batch); otherwise the cascade asks
    #: about one sample at a time and saves its state after each
    batched: bool = False


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


SAVER = Path(__file__).with_name("abcrown_adv_saver.py")


def abcrown_config(csv: Path, n_rows: int, input_shape, workdir: Path, device: str, base: dict) -> dict:
    """The generated alpha-beta-CROWN configuration of a CSV batch (``base`` merged under it, ours wins)."""
    ours = {
        "general": {
            "device": device,
            "root_path": str(workdir),
            "csv_name": csv.name,
            "results_file": str(workdir / "abcrown_results.pkl"),
            "save_adv_example": True,
            "complete_verifier": "bab",
        },
        # the conversion check must run on every row: no conversion cache
        "model": {"onnx_path": None, "input_shape": [-1, *map(int, input_shape)], "cache_onnx_conversion": False},
        "specification": {"vnnlib_path": None},  # a vnnlib_path would switch the CSV mode off
        "data": {"start": 0, "end": int(n_rows)},  # results[k] is CSV row k
        "attack": {"cex_path": str(workdir / "abcrown_cex.txt"), "adv_saver": f'Customized("{SAVER}", "save")'},
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


def conversion_alarm(text: str) -> str | None:
    """The first line of alpha-beta-CROWN's log that says its ONNX conversion is not to be trusted."""
    for line in text.splitlines():
        if any(a in line for a in CONVERSION_ALARMS):
            return line.strip()
    return None


def _read_results(path: Path) -> list:
    """``results`` of alpha-beta-CROWN's CSV-mode pickle: ``[[status, seconds], ...]`` per finished row."""
    if not path.is_file():
        return []
    try:
        import torch  # noqa: F401 - its pickle holds torch tensors (bab_ret)

        with open(path, "rb") as f:
            return list(pickle.load(f).get("results") or [])
    except Exception as e:  # a pickle cut short by a kill: the rows are lost, not wrong
        logger.warning("cannot read alpha-beta-CROWN's results %s: %s", path, e)
        return []


def _row_answer(row: list, cex: Path, n: int) -> ExternalAnswer:
    status, seconds = str(row[0]), float(row[1])
    late = status.endswith("(timed out)")  # it answered after the budget: the budget decides
    verdict = "timeout" if late else vnncomp.parse_answer(status.split()[0] if status.split() else "")[0]
    z = None
    if verdict == "sat" and cex.is_file():
        _, values = vnncomp.parse_answer("sat\n" + cex.read_text(errors="replace"))
        z = vnncomp.assignment_vector(values["X"], n)
    return ExternalAnswer(verdict, z, detail=status, seconds=seconds)


def _run_abcrown(onnx, queries, input_shape, workdir: Path, settings, device: str) -> list[ExternalAnswer]:
    """All queries ``[(vnnlib, budget_s)]`` in alpha-beta-CROWN's CSV batch mode: one process, unless it
    dies on a row (e.g. killed for memory in BaB on a CNN7): that row is an error (undecided) and a new
    process takes the rows after it, so one sample cannot cost the others their verdicts. Two processes in
    a row that finish nothing end the batch (a crash that is not about a row: every row left is an error)."""
    answers: list[ExternalAnswer] = []
    idle = 0
    while len(answers) < len(queries):
        done, run, why = _abcrown_process(onnx, queries[len(answers):], input_shape, workdir, settings, device)
        answers += done
        idle = 0 if done else idle + 1
        left = len(queries) - len(answers)
        if not left:
            break
        if run.reason == "timeout":  # the whole batch's time is spent: every row left is a timeout
            answers += [ExternalAnswer("timeout", detail=why) for _ in range(left)]
        elif idle >= 2 or left == 1:
            answers += [ExternalAnswer("error", detail=why) for _ in range(left)]
        else:
            answers.append(ExternalAnswer("error", detail=why))  # the row it died on
            if len(answers) < len(queries):
                logger.warning("alpha-beta-CROWN died on row %d of %d (%s); a new process takes the %d after it",
                               len(answers), len(queries), why, len(queries) - len(answers))
    return answers


def _abcrown_process(onnx, queries, input_shape, workdir: Path, settings, device: str):
    """One alpha-beta-CROWN process over ``queries``: (answers of the rows it finished, its run, why it
    stopped short — or "" when it finished them all)."""
    script = locate_abcrown()
    if script is None:
        raise CTBenchError("alpha-beta-CROWN not found (set CTBENCH_ABCROWN to its abcrown.py)")
    path = getattr(settings, "abcrown_config", "")
    base = load_base_config(path) if path else BUILTIN_BASE["cuda" if device == "cuda" else "cpu"]
    csv = workdir / "abcrown_instances.csv"
    csv.write_text("".join(f"{onnx},{vnnlib},{budget:.3f}\n" for vnnlib, budget in queries))
    cfg = abcrown_config(csv, len(queries), input_shape, workdir, device, base)
    results, cex = Path(cfg["general"]["results_file"]), Path(cfg["attack"]["cex_path"])
    for k in range(len(queries)):
        _row_cex(cex, k).unlink(missing_ok=True)
    results.unlink(missing_ok=True)
    cfg_path = workdir / "abcrown_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    python = os.environ.get("CTBENCH_ABCROWN_PYTHON") or sys.executable
    cmd = [python, str(script), "--config", str(cfg_path)]
    log = workdir / "abcrown.log"
    limit = sum(b for _, b in queries) + ABCROWN_GRACE_S
    try:
        run = run_in_group(cmd, cwd=script.parent, log=log, timeout_s=limit, watch=conversion_alarm)
    except OSError as e:
        raise CTBenchError(f"cannot run alpha-beta-CROWN ({' '.join(cmd)}): {e}") from None
    # the alarm stopped the run, or (a batch killed at its time limit) is in the log it left
    alarm = run.reason if run.reason not in ("exit", "timeout") else conversion_alarm(log.read_text(errors="replace"))
    if alarm:
        raise CTBenchError(
            f"alpha-beta-CROWN's ONNX conversion is not to be trusted ({alarm!r}); "
            "no certificate from it is used and this certification fails"
        )
    rows = _read_results(results)
    n = int(np.prod(input_shape))
    answers = [_row_answer(row, _row_cex(cex, k), n) for k, row in enumerate(rows[: len(queries)])]
    why = ""
    if len(answers) < len(queries):
        if run.reason == "timeout":
            why = "the batch exceeded the sum of its budgets and was killed"
        else:
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            logger.warning("alpha-beta-CROWN finished %d of %d rows (exit %s); log tail:\n%s",
                           len(answers), len(queries), run.returncode, tail)  # fmt: skip
            why = f"alpha-beta-CROWN exited ({run.returncode}) on this row or before it"
    logger.info("alpha-beta-CROWN: %d of %d samples in one process, %.1f s", len(answers), len(queries), run.seconds)
    return answers, run, why


def _row_cex(cex: Path, k: int) -> Path:
    """Where ``abcrown_adv_saver.py`` keeps row k's counterexample."""
    return cex.with_name(f"{cex.stem}_{k}{cex.suffix}")


_register(ExternalVerifier("abCROWN", abcrown_available, _run_abcrown, batched=True))


# -- Marabou ---------------------------------------------------------------------------------------


def marabou_available() -> bool:
    return importlib.util.find_spec("maraboupy") is not None


_MARABOU_NETWORKS: dict[tuple[str, float], object] = {}


def _marabou_network(onnx: Path):
    key = (str(onnx), onnx.stat().st_mtime)
    if key not in _MARABOU_NETWORKS:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Tensorflow parser is unavailable"
            from maraboupy import Marabou
        _MARABOU_NETWORKS.clear()
        with quiet_stdout():
            _MARABOU_NETWORKS[key] = Marabou.read_onnx(str(onnx))
    return _MARABOU_NETWORKS[key]


def _marabou_one(net, vnnlib, timeout_s: float) -> ExternalAnswer:
    from maraboupy import Marabou

    t0 = time.perf_counter()
    options = Marabou.createOptions(verbosity=0, timeoutInSeconds=max(1, int(timeout_s)))
    with quiet_stdout():
        exit_code, vals, _ = net.solve(propertyFilename=str(vnnlib), options=options, verbose=False)
    verdict = {"unsat": "unsat", "sat": "sat", "TIMEOUT": "timeout"}.get(exit_code, "unknown")
    z = None
    if verdict == "sat":
        z = np.array([vals[int(v)] for v in np.asarray(net.inputVars[0]).flatten()], dtype=np.float64)
    return ExternalAnswer(verdict, z, detail=str(exit_code), seconds=time.perf_counter() - t0)


def _run_marabou(onnx, queries, input_shape, workdir, settings, device) -> list[ExternalAnswer]:
    net = _marabou_network(Path(onnx))  # imports maraboupy quietly
    return [
        _marabou_one(net, vnnlib, budget) if budget >= 1.0 else ExternalAnswer("timeout", detail="no time left")
        for vnnlib, budget in queries
    ]


_register(ExternalVerifier("Marabou", marabou_available, _run_marabou))


# -- the model's files, shared by all samples of one run -------------------------------------------


WORKSPACE_PREFIX = "ctbench-vnncomp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_workspaces(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the workspaces of dead ctbench processes (a SIGKILLed run cannot clean up after itself)."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for d in root.glob(f"{WORKSPACE_PREFIX}*-*"):
        pid = d.name[len(WORKSPACE_PREFIX) :].split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class Workspace:
    """A temporary folder with the exported ONNX model; one per certification run (and Context).

    Named ``ctbench-vnncomp-<pid>-*`` under the temporary directory and removed by :meth:`close`
    (the cascade calls it on every way out, SIGTERM included), or when the object is collected or the
    interpreter exits; folders of dead (SIGKILLed) processes are removed when the next one is made."""

    def __init__(self, model, input_shape: tuple[int, ...]):
        remove_stale_workspaces()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-"))
        # also removed when the object is collected or the interpreter exits (a caller that never closes)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.dir), ignore_errors=True)
        try:
            self.input_shape = tuple(int(s) for s in input_shape)
            self.norm, _ = vnncomp.split_normalization(model)
            self.onnx = vnncomp.export_onnx(model, self.input_shape, self.dir / "model.onnx")
        except BaseException:
            self.close()
            raise

    def vnnlib(self, lower64, upper64, label: int, num_classes: int, tag: str) -> Path:
        lo, hi = vnncomp.normalized_box(self.norm, lower64, upper64)
        return vnncomp.write_vnnlib(self.dir / f"{tag}.vnnlib", lo, hi, label, num_classes)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def verify_many(name: str, workspace: Workspace, boxes, labels, budgets, num_classes: int, *, settings=None,
                device: str = "cpu") -> list[ExternalAnswer]:
    """Ask verifier ``name`` about many samples in one call: ``boxes`` = [(lower64, upper64)] in pixel
    space ((1, *in) float64 each), ``labels``, ``budgets`` (seconds each). A sample with under a second
    left is a timeout without asking."""
    verifier = EXTERNAL_VERIFIERS.get(name)
    answers: list[ExternalAnswer | None] = [None] * len(labels)
    queries, rows = [], []
    for k, ((lo, hi), label, budget) in enumerate(zip(boxes, labels, budgets, strict=True)):
        if budget < 1.0:
            answers[k] = ExternalAnswer("timeout", detail="no time left")
            continue
        queries.append((workspace.vnnlib(lo, hi, int(label), num_classes, tag=f"{name}_q{k}"), float(budget)))
        rows.append(k)
    try:
        if queries:
            got = verifier.run(workspace.onnx, queries, workspace.input_shape, workspace.dir, settings, device)
            for k, ans in zip(rows, got, strict=True):
                answers[k] = ans
    finally:
        for path, _ in queries:
            path.unlink(missing_ok=True)
    return answers
