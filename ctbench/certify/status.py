"""Per-sample certification status: a small ``uint8`` enum stored in ``certify.h5``.

The numbering is part of the file format (see ``docs/certificates.md``); the mapping is stored with
every file (as an HDF5 enum type and as the JSON attribute ``status_enum``), so readers never need
this module.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Final decision for one sample. ``certified_*``: proven robust by the named (sound) stage."""

    INCORRECT = 0  #: the clean input is misclassified (not robust, nothing else computed)
    CERTIFIED_IBP = 1
    CERTIFIED_CROWN_IBP = 2
    CERTIFIED_CROWN = 3
    CERTIFIED_ALPHA_CROWN = 4
    CERTIFIED_BAB = 5
    CERTIFIED_MILP = 6
    FALSIFIED = 7  #: a concrete counterexample inside the ε-ball was found (attack or verifier)
    TIMEOUT = 8  #: the complete stage ran out of its per-sample time budget
    UNKNOWN = 9  #: undecided by every stage that ran (incomplete cascade)
    CERTIFIED_ABCROWN = 10  #: optional alpha-beta-CROWN stage (only when it can be found)
    CERTIFIED_MARABOU = 11  #: optional Marabou stage (maraboupy)

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def certified(self) -> bool:
        return self.name.startswith("CERTIFIED")


#: ``stage_status`` value of a stage that never saw the sample (decided before it, or beyond a limit).
NOT_SEEN = 255

#: name → value, as stored in the files.
STATUS_MAPPING: dict[str, int] = {s.label: int(s) for s in Status}
CERTIFIED_VALUES: tuple[int, ...] = tuple(int(s) for s in Status if s.certified)
