"""VNN-COMP interchange: a model as ONNX, one sample's robustness query as VNNLIB, a verifier's answer.

External complete verifiers (alpha-beta-CROWN, Marabou; :mod:`ctbench.certify.external`) read the
formats of the International Verification of Neural Networks Competition (VNN-COMP): the network
as ONNX, the property as VNNLIB (an SMT-LIB subset over inputs ``X_i`` and outputs ``Y_j``) that
states the *negation* of robustness, and a one-word answer: ``unsat`` (no counterexample: robust),
``sat`` (with a counterexample assignment), ``timeout`` or ``unknown``.

Why the translation is sound:

* **Same network, BatchNorm folded.** The exported graph is the model after its leading
  :class:`~ctbench.nn.Normalization` layer, in eval mode, with every BatchNorm (population statistics)
  folded into the Conv or Linear layer right before it: ``w' = w·γ/√(σ²+ϵ)`` per output channel,
  ``b' = (b − μ)·γ/√(σ²+ϵ) + β``, computed in float64 and rounded once to float32. The graph then holds
  only Conv, Gemm, Relu and Flatten, which every verifier converts (alpha-beta-CROWN's onnx2pytorch
  converted a BatchNorm1d node wrongly). The folded network differs from the model only by float32
  rounding: :func:`check_export` runs the written file (onnxruntime) against the model in float64 and
  refuses it if any logit differs by more than ``EXPORT_TOL``. (torch's own exporter folds
  Conv+BatchNorm2d too, but not Linear+BatchNorm1d.)
* **Input box.** The normalization is applied to the pixel-space ε-box instead, in float64, and the
  result is widened by a few ulps, so the box in the VNNLIB file contains the image of the ε-box
  (``normalized_box``). Values are written with ``repr`` (shortest round-trip decimal).
* **Property.** For label ``y`` the file asserts ``(or (and (>= Y_j Y_y)) …)`` over ``j ≠ y``:
  "some other logit reaches the true one". ``unsat`` therefore means every margin ``z_y − z_j`` is
  > 0 on the whole box, exactly the cascade's notion of certified.
* **Counterexamples are never trusted.** A ``sat`` answer's ``X_i`` values are mapped back to pixel
  space and the cascade re-checks the point on its own model (inside the float64 box, margin < 0 in
  float32 and float64) before it marks the sample falsified.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ctbench.errors import CTBenchError
from ctbench.io import atomic_path
from ctbench.nn import Normalization

#: Layers the exporter accepts (the CNN7/CNN5/cnn_small/MLP families); anything else is refused.
EXPORTABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Flatten)
#: Largest |logit difference| allowed between the exported file and the model (relative to 1 + |logit|).
EXPORT_TOL = 1e-4
#: How far (in float64 ulps) the normalized box is widened: (x − mean) / std has two roundings.
WIDEN_ULPS = 4

VERDICTS = ("unsat", "sat", "timeout", "unknown", "error")
#: Answers of alpha-beta-CROWN's own logger and of VNN-COMP 2021 mapped to the VNN-COMP words.
_ALIASES = {
    "holds": "unsat",
    "safe": "unsat",
    "safe-incomplete": "unsat",
    "safe-mip": "unsat",
    "safe-lp": "unsat",
    "unsafe-lp": "sat",
    "verified": "unsat",
    "violated": "sat",
    "unsafe": "sat",
    "unsafe-pgd": "sat",
    "unsafe-bab": "sat",
    "unsafe-mip": "sat",
    "falsified": "sat",
    "unknown-mip": "unknown",
}
_ASSIGNMENT = re.compile(r"\(\s*([XY])_(\d+)\s+([-+0-9.eEinfa]+)\s*\)")


def split_normalization(model: nn.Sequential) -> tuple[Normalization | None, nn.Sequential]:
    """``(normalization, body)``: the leading :class:`Normalization` (or None) and the rest, in eval mode."""
    layers = list(model)
    norm = layers[0] if layers and isinstance(layers[0], Normalization) else None
    body = nn.Sequential(*(layers[1:] if norm is not None else layers))
    for layer in body:
        if not isinstance(layer, EXPORTABLE):
            raise CTBenchError(
                f"cannot export {type(layer).__name__} to ONNX for an external verifier "
                f"(supported: {', '.join(t.__name__ for t in EXPORTABLE)})"
            )
    return norm, body.eval()


def fold_batchnorm(body: nn.Sequential) -> nn.Sequential:
    """A float64 copy of ``body`` (eval mode) with each BatchNorm folded into the Conv/Linear before it.

    A BatchNorm with no Conv/Linear right before it stays (exported as BatchNormalization)."""
    layers = [copy.deepcopy(m).double().cpu().eval() for m in body]
    out: list[nn.Module] = []
    for layer in layers:
        prev = out[-1] if out else None
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and isinstance(prev, (nn.Conv2d, nn.Linear)):
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)  # (C,)
            shift = layer.bias - layer.running_mean * scale
            with torch.no_grad():
                w = prev.weight * scale.view(-1, *([1] * (prev.weight.dim() - 1)))
                b = prev.bias if prev.bias is not None else torch.zeros_like(scale)
                if prev.bias is None:
                    prev.bias = nn.Parameter(torch.zeros_like(scale))
                prev.bias.copy_(b * scale + shift)
                prev.weight.copy_(w)
            continue
        out.append(layer)
    return nn.Sequential(*out).eval()


def export_onnx(model: nn.Sequential, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``model`` minus its leading Normalization as ONNX (opset 13, float32, batch dim 1), BatchNorm
    folded (module docstring), and check the file against the model (:func:`check_export`).

    ``input_shape``: per-sample shape, e.g. ``(1, 28, 28)``. The graph's input is named ``input``
    and its output (1, num_classes) ``output``. Written atomically.
    """
    _, body = split_normalization(model)
    folded = fold_batchnorm(body).float()
    z = torch.zeros(1, *input_shape)
    path = Path(path)
    if importlib.util.find_spec("onnx") is None:
        raise CTBenchError("exporting for an external verifier needs onnx: pip install 'ctbench[verifiers]'")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            folded, (z,), str(tmp), dynamo=False, opset_version=13, input_names=["input"], output_names=["output"]
        )
    check_export(body, path, input_shape)
    return path


def check_export(body: nn.Sequential, path: Path, input_shape, n: int = 16, seed: int = 0) -> float | None:
    """Max |logit difference| (relative to 1 + |logit|) of the ONNX file vs ``body`` in float64 on ``n``
    random inputs (normal, the scale of normalized pixels); a larger one than ``EXPORT_TOL`` is an error.
    Returns None (no check) without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *input_shape, generator=g, dtype=torch.float64)
    ref = copy.deepcopy(body).double().cpu().eval()
    with torch.no_grad():
        want = ref(x)
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i : i + 1].float().numpy()})[0] for i in range(n)])
    err = float((torch.as_tensor(got, dtype=torch.float64) - want).abs().div(1 + want.abs()).max())
    if not err <= EXPORT_TOL:
        raise CTBenchError(
            f"the exported ONNX model {path} differs from the model (max relative logit error {err:.2g} > "
            f"{EXPORT_TOL}); refusing to verify it"
        )
    return err


def _widen(a: np.ndarray, direction: float, ulps: int = WIDEN_ULPS) -> np.ndarray:
    for _ in range(ulps):
        a = np.nextafter(a, direction)
    return a


def normalized_box(
    norm: Normalization | None, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 box in the exported network's input space that contains ``norm([lower, upper])``.

    ``lower``/``upper``: (1, *in) pixel-space box (float64). std > 0, so the map is increasing.
    """
    lo = lower.detach().double().cpu()
    hi = upper.detach().double().cpu()
    if norm is None:
        return lo.flatten().numpy(), hi.flatten().numpy()
    mean, std = norm.mean.double().cpu(), norm.std.double().cpu()
    zlo = ((lo - mean) / std).flatten().numpy()
    zhi = ((hi - mean) / std).flatten().numpy()
    return _widen(zlo, -np.inf), _widen(zhi, np.inf)


def to_pixel_space(norm: Normalization | None, z: np.ndarray, input_shape) -> torch.Tensor:
    """Map a flat counterexample in network-input space back to a (1, *in) float64 pixel tensor."""
    t = torch.as_tensor(np.asarray(z, dtype=np.float64)).reshape(1, *input_shape)
    if norm is None:
        return t
    return t * norm.std.double().cpu() + norm.mean.double().cpu()


def robustness_vnnlib(lower: np.ndarray, upper: np.ndarray, label: int, num_classes: int) -> str:
    """VNNLIB text of "some logit j ≠ label reaches logit label for an X in [lower, upper]"."""
    if not 0 <= label < num_classes:
        raise CTBenchError(f"label {label} outside 0..{num_classes - 1}")
    if lower.shape != upper.shape or not np.all(lower <= upper):
        raise CTBenchError("VNNLIB box needs lower <= upper elementwise")
    n = lower.size
    out = [f"; robustness of label {label}: sat = counterexample\n"]
    out += [f"(declare-const X_{i} Real)\n" for i in range(n)]
    out += [f"(declare-const Y_{j} Real)\n" for j in range(num_classes)]
    for i in range(n):
        out.append(f"(assert (>= X_{i} {float(lower[i])!r}))\n(assert (<= X_{i} {float(upper[i])!r}))\n")
    out.append("(assert (or\n")
    out += [f"    (and (>= Y_{j} Y_{label}))\n" for j in range(num_classes) if j != label]
    out.append("))\n")
    return "".join(out)


def write_vnnlib(path: str | Path, lower: np.ndarray, upper: np.ndarray, label: int, num_classes: int) -> Path:
    """Write :func:`robustness_vnnlib` atomically; returns the path."""
    path = Path(path)
    text = robustness_vnnlib(lower, upper, label, num_classes)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def parse_answer(text: str) -> tuple[str, dict[str, dict[int, float]]]:
    """``(verdict, {"X": {i: v}, "Y": {j: v}})`` from a results (and/or counterexample) file's text.

    The verdict is the first word of the first non-empty line, mapped to :data:`VERDICTS`
    (alpha-beta-CROWN's ``safe``/``unsafe-pgd``/… and VNN-COMP 2021's ``holds``/``violated`` included);
    anything else is ``unknown``. Assignments are the ``(X_i value)`` / ``(Y_j value)`` pairs.
    """
    verdict = "unknown"
    for line in text.splitlines():
        word = line.strip().split()[0].lower() if line.strip() else ""
        if word and not word.startswith("("):
            verdict = _ALIASES.get(word, word if word in VERDICTS else "unknown")
            break
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, idx, val in _ASSIGNMENT.findall(text):
        try:
            values[kind][int(idx)] = float(val)
        except ValueError:
            continue
    return verdict, values


def assignment_vector(values: dict[int, float], n: int) -> np.ndarray | None:
    """The ``X_0 … X_{n-1}`` values as a vector, or None if any is missing."""
    if any(i not in values for i in range(n)):
        return None
    return np.array([values[i] for i in range(n)], dtype=np.float64)
