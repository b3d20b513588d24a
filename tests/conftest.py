"""Test-session hygiene: nothing outside the repository and temporary directories is written.

Libraries that cache in the user's home (matplotlib's font cache, Snakemake's and torch's caches) are
pointed at a directory of this session's temporary tree; the real-SLURM test, the only test that touches
the system (it installs packages and writes /etc/slurm), runs only when opted in (CTBENCH_TEST_SLURM=1,
set by .ci/run)."""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="ctbench-test-home-")
for _var, _sub in (("MPLCONFIGDIR", "matplotlib"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                   ("TORCH_HOME", "torch")):
    os.environ[_var] = os.path.join(_CACHE, _sub)
