"""A stand-in for alpha-beta-CROWN's CSV batch mode, backed by Marabou (tests only).

alpha-beta-CROWN cannot be installed from PyPI, so the tests exercise ctbench's abCROWN adapter against
this script. It keeps alpha-beta-CROWN's interface as ctbench uses it: ``python abcrown.py --config
cfg.yaml``; ``general.root_path`` + ``csv_name`` name a CSV of ``onnx, vnnlib, timeout`` rows (CSV mode
only when ``specification.vnnlib_path`` is null), ``data.start``/``end`` pick rows; after every row the
results pickle ``general.results_file`` is rewritten as ``{"summary", "results": [[status, seconds]]}``
with alpha-beta-CROWN's words (``safe`` / ``unsafe-bab`` / ``unknown``, `` (timed out)`` appended when a
row took longer than its budget); a counterexample goes through ``attack.adv_saver``
(``Customized("file.py", "save")``, called as alpha-beta-CROWN calls it, with this folder's
``arguments`` and ``attack.attack_utils`` in place of its own) to ``attack.cex_path``; the ONNX
conversion check prints alpha-beta-CROWN's warning line. The verification itself is Marabou's.

``ABCROWN_LIKE_MODE`` (environment) makes it misbehave on purpose: ``lie_sat`` answers unsafe with a
point that is no counterexample; ``crash`` exits 1 writing nothing; ``hang`` sleeps past every budget;
``bad_conversion`` prints the conversion warning and answers ``safe`` for every row; ``spawn`` starts a
helper process, writes both pids to ``$ABCROWN_LIKE_PIDS`` and sleeps; ``crash_on`` SIGKILLs itself on
the row whose VNNLIB file name contains ``$ABCROWN_LIKE_CRASH_ON`` (as the OOM killer did to the real one
on a CNN7). ``ABCROWN_LIKE_STARTS``: a file that gets one line per start.
"""

import argparse
import csv
import importlib.util
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arguments  # noqa: E402 - this folder's stand-in for alpha-beta-CROWN's module


def _saver(spec: str):
    m = re.fullmatch(r'Customized\("([^"]+)",\s*"([^"]+)"\)', spec.strip())
    assert m, spec
    mod_spec = importlib.util.spec_from_file_location("adv_saver_plugin", m.group(1))
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return getattr(mod, m.group(2))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    args = p.parse_args()
    cfg = yaml.safe_load(open(args.config))
    arguments.Config.update(cfg)
    g, m, spec, att, data = (cfg[k] for k in ("general", "model", "specification", "attack", "data"))
    if os.environ.get("ABCROWN_LIKE_STARTS"):
        with open(os.environ["ABCROWN_LIKE_STARTS"], "a") as f:
            f.write(f"{os.getpid()}\n")
    assert g["device"] in ("cpu", "cuda") and g["save_adv_example"] is True
    assert spec["vnnlib_path"] is None and g["csv_name"], "not the CSV mode"
    assert m["input_shape"][0] == -1 and all(isinstance(d, int) for d in m["input_shape"])
    with open(os.path.join(g["root_path"], g["csv_name"])) as f:
        rows = list(csv.reader(f))[data["start"] : data["end"]]
    mode = os.environ.get("ABCROWN_LIKE_MODE", "")
    if mode == "crash":
        print("Traceback: simulated crash", file=sys.stderr)
        return 1
    if mode == "hang":
        time.sleep(10_000)
    if mode == "spawn":
        helper = subprocess.Popen(["sleep", "10000"])
        with open(os.environ["ABCROWN_LIKE_PIDS"], "w") as f:
            f.write(f"{os.getpid()} {helper.pid}\n")
        time.sleep(10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import Marabou
    save = _saver(att["adv_saver"])
    summary, results = defaultdict(list), []
    for k, (onnx, vnnlib, timeout) in enumerate(rows):
        t0 = time.perf_counter()
        onnx, vnnlib = (os.path.join(g["root_path"], p) for p in (onnx, vnnlib))
        assert os.path.isfile(onnx) and os.path.isfile(vnnlib)
        if mode == "crash_on" and os.environ["ABCROWN_LIKE_CRASH_ON"] in os.path.basename(vnnlib):
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer does
        if mode == "bad_conversion":
            print("Model might not be converted correctly. Please check onnx conversion carefully.", flush=True)
            print("Max error: tensor(1.1380)", flush=True)
            word = "safe"
        else:
            net = Marabou.read_onnx(onnx)
            options = Marabou.createOptions(verbosity=0, timeoutInSeconds=max(1, int(float(timeout))))
            code, vals, _ = net.solve(propertyFilename=vnnlib, options=options, verbose=False)
            inputs = np.asarray(net.inputVars[0]).flatten()
            outputs = np.asarray(net.outputVars[0]).flatten()
            if mode == "lie_sat":
                code, vals = "sat", {int(v): 0.0 for v in np.concatenate([inputs, outputs])}
            word = {"unsat": "safe", "sat": "unsafe-bab"}.get(code, "unknown")
            if code == "sat":
                arguments.Globals["example_idx"] = k
                save([float(vals[int(v)]) for v in inputs], [float(vals[int(v)]) for v in outputs], att["cex_path"])
        seconds = time.perf_counter() - t0
        if seconds > float(timeout) and word != "unknown":
            word += " (timed out)"
        summary[word].append(k)
        results.append([word, seconds])
        with open(g["results_file"], "wb") as f:
            pickle.dump({"summary": summary, "results": results, "bab_ret": []}, f)
        print(f"Result: {word} in {seconds:.4f} seconds", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
