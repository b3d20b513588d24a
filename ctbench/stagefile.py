"""Stage settings files: what one stage job of one cell runs, resolved once by the grid.

The grid (:meth:`ctbench.grid.Grid.stage_file`) writes one JSON file per stage job of a cell,
``<cell dir>/settings/<stage>.json`` (the train job's is ``cell.json``)::

    {"format": "ctbench-stage/1", "stage": "certify", "cell": {...}, "eps": "0.1", "version": 1,
     "parents": {"select": "<fingerprint>"}, "settings": {"timeout": 1000, ...},
     "fingerprint": "<fingerprint>", "checksum": "<digest of everything above>"}

``settings`` hold every setting of the stage with the schema's defaults filled in (``ctbench.core.config_section``)
and ``fingerprint`` is ``stage_fingerprint(stage, version, parents, settings)`` (``ctbench.fingerprint``).

The job (``ctbench certify --settings FILE``, likewise select, attack, summarize and the per-model analyses):

1. :func:`read` refuses a file whose checksum or fingerprint does not match its content (edited by hand)
   or that is meant for another stage;
2. takes each setting it applies with :meth:`StageFile.take` (dotted keys reach into nested settings);
3. calls :meth:`StageFile.applied`, which refuses a file holding a setting the job did not take (so a key
   added to the schema but not to the job can never run on a default under a fingerprint that claims it)
   and returns the fingerprint computed from the values taken: the one the job records in its output;
4. refuses inputs whose recorded fingerprints are not the file's ``parents``
   (:func:`ctbench.fingerprint.check_expected`).

Example::

    sf = read("results/.../settings/certify.json", "certify")
    timeout = sf.take("timeout"); steps = sf.take("falsifier.steps"); ...
    fingerprint = sf.applied()
"""

from __future__ import annotations

import json
from pathlib import Path

from ctbench.errors import CTBenchError
from ctbench.fingerprint import digest, stage_fingerprint

FORMAT = "ctbench-stage/1"
_MISSING = object()


def make(stage: str, cell: dict, eps: str, version: int, parents: dict, settings: dict) -> dict:
    """The content of a stage settings file (module docstring), fingerprint and checksum included."""
    body = {"format": FORMAT, "stage": stage, "cell": cell, "eps": eps, "version": int(version),
            "parents": dict(parents), "settings": settings,
            "fingerprint": stage_fingerprint(stage, version, parents, settings)}
    return {**body, "checksum": digest(body)}


def read(path, stage: str | tuple[str, ...]) -> StageFile:
    """The checked stage settings file at ``path`` for ``stage`` (a name, or name prefixes such as
    ``("certify", "verifier_")``); one :class:`CTBenchError` line for anything wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CTBenchError(f"settings file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise CTBenchError(f"{path}: not a readable stage settings file ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CTBenchError(f"{path}: not a stage settings file (format {FORMAT!r} expected)")
    wanted = (stage,) if isinstance(stage, str) else stage
    name = str(data.get("stage"))
    if not any(name == w or (w.endswith("_") and name.startswith(w)) for w in wanted):
        raise CTBenchError(f"{path}: settings of stage {name!r}, not of this job ({' or '.join(wanted)})")
    if not intact(data):
        raise CTBenchError(f"{path} was changed after the workflow wrote it (its checksum no longer matches); "
                           "change the configuration instead and let snakemake rewrite it")
    return StageFile(path, {k: v for k, v in data.items() if k != "checksum"})


def intact(data: dict) -> bool:
    """Whether a stage settings file's content is what :func:`make` wrote: every key, its checksum and its
    fingerprint match (False: edited by hand)."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    keys = {"stage", "cell", "eps", "version", "parents", "settings", "fingerprint"}
    return keys <= set(body) and data.get("checksum") == digest(body) and body["fingerprint"] == stage_fingerprint(
        body["stage"], body["version"], body["parents"], body["settings"])


def in_memory(stage: str, settings: dict, eps) -> StageFile:
    """The settings a command's options stand for, read the same way as a file (by hand: no parents, and
    the command records no fingerprint). ``eps`` missing is the one-line error of a missing ``--eps``."""
    if eps is None:
        raise CTBenchError("--eps is required (or --settings FILE, which holds it)")
    return StageFile(Path("<command-line options>"), make(stage, {}, str(eps), 1, {}, settings))


class StageFile:
    """A checked stage settings file (see :func:`read`); ``settings`` are read through :meth:`take`."""

    def __init__(self, path: Path, body: dict):
        self.path = path
        self.stage: str = body["stage"]
        self.cell: dict = body["cell"]
        self.eps: str = body["eps"]
        self.version: int = int(body["version"])
        self.parents: dict = dict(body["parents"])
        self.fingerprint: str = body["fingerprint"]
        self._settings: dict = body["settings"]
        self._taken: dict = {}

    def take(self, key: str):
        """The value of setting ``key`` (``a.b`` for nested ones; a whole mapping takes all it holds), recorded
        as applied."""
        value = self._settings
        for part in key.split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                raise CTBenchError(f"{self.path}: the {self.stage} settings have no {key!r}; rewrite them with "
                                   "this version of ctbench (snakemake re-makes them)")
        self._taken[key] = value
        return value

    def applied(self) -> str:
        """The fingerprint of the settings taken; refuses settings this job did not apply."""
        taken = self._taken
        left = sorted(k for k in _leaves(self._settings) if not any(k == t or k.startswith(t + ".") for t in taken))
        if left:
            raise CTBenchError(f"{self.path}: this ctbench does not apply the {self.stage} setting(s) "
                               f"{', '.join(left)}; remove them from the configuration or update ctbench")
        applied = _nest(self._taken)
        fp = stage_fingerprint(self.stage, self.version, self.parents, applied)
        if fp != self.fingerprint:
            raise CTBenchError(f"{self.path}: the settings applied ({applied}) are not the file's")
        return fp


def _leaves(settings: dict, prefix: str = "") -> list[str]:
    """Dotted keys of the non-dict values of ``settings`` (an empty dict counts as a value)."""
    out = []
    for k, v in settings.items():
        key = f"{prefix}{k}"
        out += _leaves(v, key + ".") if isinstance(v, dict) and v else [key]
    return out


def _nest(taken: dict) -> dict:
    """``{"a.b": 1, "c": 2}`` → ``{"a": {"b": 1}, "c": 2}``."""
    out: dict = {}
    for key, value in taken.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out
