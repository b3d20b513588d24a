#!/usr/bin/env bash
# Wheels of ctbench's pure-Python dependencies that the GPU machine's image lacks (its Python 3.12 has torch,
# h5py, pandas, pyarrow, pyyaml, tqdm, pytest), into .whl/ for benchmarks/device.sh. Run here, where PyPI is
# reachable; keep .whl/ out of git (echo /.whl/ >> .git/info/exclude) and carry it to the GPU machine.
set -euo pipefail
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  jsonschema jsonschema-specifications referencing rpds-py attrs
ls .whl
