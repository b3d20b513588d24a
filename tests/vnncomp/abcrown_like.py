"""A stand-in for alpha-beta-CROWN's command line, backed by Marabou (tests only).

alpha-beta-CROWN cannot be installed from PyPI, so the tests exercise ctbench's abCROWN adapter
against this script: same invocation (``python abcrown.py --config cfg.yaml``), same configuration
keys (general.results_file / save_adv_example / device, model.onnx_path / input_shape,
specification.vnnlib_path, attack.cex_path, bab.timeout), answers in alpha-beta-CROWN's words
(``safe`` / ``unsafe-bab`` / ``timeout``) with the counterexample in VNN-COMP's ``((X_i v) …)`` form
in ``cex_path``. The verification itself is Marabou's, a real complete verifier.

``ABCROWN_LIKE_MODE`` (environment) makes it misbehave on purpose:
``lie_sat`` answers unsafe with a point that is no counterexample; ``crash`` exits 1 writing nothing;
``hang`` sleeps past every budget.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
import yaml


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    args = p.parse_args()
    cfg = yaml.safe_load(open(args.config))
    g, m, spec, att, bab = (cfg[k] for k in ("general", "model", "specification", "attack", "bab"))
    assert g["device"] in ("cpu", "cuda") and g["save_adv_example"] is True
    assert m["input_shape"][0] == -1 and all(isinstance(d, int) for d in m["input_shape"])
    assert os.path.isfile(m["onnx_path"]) and os.path.isfile(spec["vnnlib_path"])
    mode = os.environ.get("ABCROWN_LIKE_MODE", "")
    if mode == "crash":
        print("Traceback: simulated crash", file=sys.stderr)
        return 1
    if mode == "hang":
        time.sleep(10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import Marabou
    net = Marabou.read_onnx(m["onnx_path"])
    options = Marabou.createOptions(verbosity=0, timeoutInSeconds=max(1, int(bab["timeout"])))
    code, vals, _ = net.solve(propertyFilename=spec["vnnlib_path"], options=options, verbose=False)
    inputs = np.asarray(net.inputVars[0]).flatten()
    outputs = np.asarray(net.outputVars[0]).flatten()
    if mode == "lie_sat":
        code, vals = "sat", {int(v): 0.0 for v in np.concatenate([inputs, outputs])}
    word = {"unsat": "safe", "sat": "unsafe-bab", "TIMEOUT": "timeout"}.get(code, "unknown")
    with open(g["results_file"], "w") as f:
        f.write(word + "\n")
    if code == "sat":
        lines = [f"(X_{i} {float(vals[int(v)])!r})" for i, v in enumerate(inputs)]
        lines += [f"(Y_{j} {float(vals[int(v)])!r})" for j, v in enumerate(outputs)]
        with open(att["cex_path"], "w") as f:
            f.write("(" + "\n ".join(lines) + ")\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
