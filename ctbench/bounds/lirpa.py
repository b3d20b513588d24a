"""auto_LiRPA as a second bound backend — the only module in ctbench that imports auto_LiRPA.

auto_LiRPA (Xu et al., "Automatic Perturbation Analysis for Scalable Certified Robustness and Beyond",
NeurIPS 2020) is the reference implementation of IBP / CROWN-IBP / CROWN / alpha-CROWN and of *loss
fusion*. ctbench uses it as an independent cross-check of the native engine and as a selectable backend
(``compute_bounds(..., backend="auto_lirpa")``).

Installation is a separate, documented step (PyPI's only release, 0.3, pins torch<1.13)::

    pip install --no-deps auto-lirpa==0.3 && pip install appdirs packaging

Compatibility fixes
-------------------
auto_LiRPA 0.3 does not import / run correctly on current torch and numpy. :func:`_ensure_imported`
applies six small fixes from :mod:`ctbench.bounds.lirpa_compat` lazily on first use (never at
``import ctbench.bounds``), each only when its problem is detected, each idempotent: (a) numpy>=2's
missing ``numpy.lib.arraysetops``; (b) torch's removed ``symbolic_helper._set_opset_version``;
(c) ``torch._C.Node`` no longer subscriptable; (d) ``BoundedModule._named_members`` without torch 2's
``remove_duplicate``; (e) SOUNDNESS: ONNX symbolic functions registered lazily on torch>=2.9, without
which auto_LiRPA lowers ops with old-opset rules (unsound CROWN for ``pow``; loss fusion fails) — the
registration is triggered before every ``BoundedModule`` is built; (f) torch's ``clamp`` gradient,
zero at the clamp bounds, which froze alpha-CROWN's slopes at their initial 0/1 values (its bound
was CROWN's).

On first bound computation a self-check (:func:`self_check`) verifies that IBP and CROWN bounds of a
tiny Conv-BN-ReLU-Linear net contain sampled points; if not, :class:`CTBenchError` says auto_LiRPA is
unsound on this torch version.

BatchNorm
---------
* ``eval()``: running statistics in both engines (cross-checks, certification). auto_LiRPA copies
  buffers when it builds its graph, so the adapter copies the model's current running statistics in
  before every call.
* ``train()`` with ctbench's frozen clean-batch statistics (``clean_forward_and_freeze_bn``): the
  adapter hands exactly those (differentiable) statistics to auto_LiRPA's BatchNorm nodes, so both
  engines bound the same function.
* ``train()`` without frozen statistics: auto_LiRPA's own semantic — batch statistics of the
  BoundedTensor's value (``x`` if passed, else the box midpoint, which differs from the clean batch
  for clipped boxes), with gradients through them. Its running-statistics update goes to
  auto_LiRPA's private copy, never to the model.

auto_LiRPA quirks handled here: building a BoundedModule can leave the model in eval mode (all
``.training`` flags are restored); ``BoundParams.forward`` calls ``requires_grad_(training)`` on the
shared parameters (all ``.requires_grad`` flags are restored); the build's ``load_state_dict`` would
bump the parameters' autograd versions and break a pending clean-forward graph (the graph is built
on stand-in parameters and re-pointed); CROWN fails on a leading Normalization followed by a padded
conv (the box is mapped through it instead); its import calls ``logging.basicConfig(stream=sys.stdout)``
(the handler is removed again). In ``eval()`` mode auto_LiRPA bounds carry no parameter gradients
(certification only).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ctbench.bounds import batchnorm
from ctbench.bounds import lirpa_compat as compat
from ctbench.errors import CTBenchError
from ctbench.nn import Normalization

_BatchNorm = nn.modules.batchnorm._BatchNorm

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps auto-lirpa==0.3 && pip install appdirs packaging"
UNAVAILABLE_MESSAGE = f"auto_LiRPA backend unavailable: install it with `{INSTALL_HINT}` (see README)"

#: ctbench bound-method names → auto_LiRPA ``compute_bounds(method=...)`` names.
METHODS = {"IBP": "IBP", "CROWN-IBP": "CROWN-IBP", "CROWN": "CROWN", "alpha-CROWN": "alpha-CROWN"}

_state: dict = {"module": None, "error": None, "self_check": None}
# Letters of the fixes ever applied in this process: the patches outlive _reset_for_tests().
_patched: set[str] = set()
# model -> {(shape, dtype, device, fusion): (BoundedModule, tensor signature)}; weak so models can be freed.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _is_missing(exc: ImportError) -> bool:
    """True when auto_LiRPA itself (or one of its plain runtime dependencies) is not installed."""
    missing = {"auto_LiRPA", "appdirs", "tqdm", "yaml", "packaging"}
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in missing


def _ensure_imported():
    """Apply fixes a-f where detected, import auto_LiRPA once and return the module.

    Raises :class:`CTBenchError` (one line, with the install command) when auto_LiRPA is missing.
    """
    if _state["module"] is not None:
        return _state["module"]
    try:
        fixes = []
        if compat.fix_numpy_arraysetops():
            fixes.append("a")
        if compat.fix_set_opset_version():
            fixes.append("b")
        if compat.fix_node_getitem():
            fixes.append("c")
        root = logging.getLogger()
        root_handlers = list(root.handlers)
        try:
            lirpa = importlib.import_module("auto_LiRPA")
        finally:  # auto_LiRPA.utils calls logging.basicConfig(stream=sys.stdout) at import: undo it
            for handler in root.handlers[:]:
                if handler not in root_handlers:
                    root.removeHandler(handler)
        if compat.fix_named_members(lirpa.BoundedModule):
            fixes.append("d")
        if compat.trigger_symbolic_registration():
            fixes.append("e")
        from auto_LiRPA.operators.activation import BoundRelu

        if compat.fix_relu_alpha_clamp(BoundRelu):
            fixes.append("f")
    except ImportError as exc:
        if _is_missing(exc):
            _state["error"] = UNAVAILABLE_MESSAGE
            raise CTBenchError(UNAVAILABLE_MESSAGE) from exc
        _state["error"] = (f"auto_LiRPA is installed but fails to import on torch {torch.__version__} "
                           f"even with ctbench's fixes: {exc}; use backend='native'")
        raise CTBenchError(_state["error"]) from exc
    logging.getLogger("auto_LiRPA").setLevel(logging.WARNING)
    _patched.update(fixes)
    _state.update(module=lirpa, error=None)
    logger.info("auto_LiRPA %s imported; compatibility fixes applied: %s",
                getattr(lirpa, "__version__", "?"), ",".join(fixes) or "none")
    return lirpa


def applied_fixes() -> tuple[str, ...]:
    """The letters (a-f) of the compatibility fixes in effect (empty before first use).

    A fix patches auto_LiRPA for the whole process, so one applied by an earlier import stays listed.
    """
    return tuple(sorted(_patched)) if _state["module"] is not None else ()


def lirpa_available() -> bool:
    """True when auto_LiRPA imports (after the fixes); see :func:`lirpa_unavailable_reason`."""
    try:
        _ensure_imported()
    except CTBenchError:
        return False
    return True


def lirpa_unavailable_reason() -> str | None:
    """Why the backend is unavailable (one line with the install command), or None when it is."""
    return None if lirpa_available() else _state["error"]


def _reset_for_tests() -> None:
    """Forget the imported module, the self-check result and all cached BoundedModules."""
    _state.update(module=None, error=None, self_check=None)
    _cache.clear()


# --------------------------------------------------------------------------------------------------
# BoundedModule construction, caching and per-call synchronization
# --------------------------------------------------------------------------------------------------
@contextmanager
def _preserve_model_flags(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``.training`` and every parameter's ``.requires_grad``.

    Building a BoundedModule can switch the model to eval mode, and auto_LiRPA's ``BoundParams.forward``
    calls ``param.requires_grad_(self.training)`` on the *shared* parameters: without this, an eval-mode
    bound computation would silently freeze the caller's parameters.
    """
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)


@contextmanager
def _stand_in_parameters(module: nn.Module) -> Iterator[dict]:
    """Temporarily replace the parameters of ``module`` by detached clones; yields {id(clone): original}.

    ``BoundedModule.__init__`` ends with ``load_state_dict`` into the parameters it shares with the
    model, an in-place copy that bumps their autograd version and so breaks any graph built before
    (e.g. ctbench's clean forward whose frozen BatchNorm statistics are still to be backpropagated).
    The graph is therefore built on stand-ins and its parameter nodes are re-pointed afterwards.
    """
    clones: dict[int, nn.Parameter] = {}
    swapped = []
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is None:
                continue
            if id(p) not in clones:
                clones[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
            swapped.append((m, name, p))
            m._parameters[name] = clones[id(p)]
    try:
        yield {id(clones[id(p)]): p for _, _, p in swapped}
    finally:
        for m, name, p in swapped:
            m._parameters[name] = p


def _signature(model: nn.Module) -> tuple:
    """Identity of the model's tensors; a BoundedModule shares them, so rebuild when they change."""
    return tuple((id(t), t.data_ptr(), t.dtype, t.device) for t in model.state_dict(keep_vars=True).values())


def _split_normalization(model: nn.Module) -> tuple[Normalization | None, nn.Module]:
    """(first-layer Normalization or None, the rest of the net as an ``nn.Sequential``).

    auto_LiRPA 0.3's CROWN fails (an assertion in patches mode) on the per-channel ``Div`` of a
    Normalization followed by a padded conv. Normalization is a per-channel increasing affine map
    (std > 0), so the box is mapped through it exactly and the rest of the net is bounded instead.
    """
    if isinstance(model, nn.Sequential) and len(model) > 1 and isinstance(model[0], Normalization):
        return model[0], nn.Sequential(*list(model)[1:])
    return None, model


@dataclass
class _Entry:
    """A cached BoundedModule and how its nodes map back to the model.

    auto_LiRPA shares the model's parameters but *copies* its buffers (BatchNorm running statistics)
    at build time, so ``buffers`` are copied in before every use; ``batchnorms`` map each BatchNorm
    node to its module, to hand it ctbench's frozen clean-batch statistics.
    """

    bounded: object
    signature: tuple
    buffers: list = field(default_factory=list)  # [(BoundBuffers node, model buffer tensor)]
    batchnorms: list = field(default_factory=list)  # [(BoundBatchNormalization node, nn BatchNorm)]
    unmapped_batchnorms: int = 0  # BatchNorm nodes without an affine weight to identify their module


def _build(model: nn.Module, x: torch.Tensor, fusion: bool, signature: tuple) -> _Entry:
    lirpa = _ensure_imported()
    from auto_LiRPA.bound_ops import BoundBatchNormalization, BoundBuffers, BoundParams

    compat.trigger_symbolic_registration()  # fix (e), before every build
    body = _split_normalization(model)[1]
    traced = lirpa.CrossEntropyWrapper(body) if fusion else body
    # Built in eval mode: the trace then runs no running-statistics update and uses the ordinary
    # BatchNorm op even when ctbench froze clean-batch statistics on the instance.
    with _preserve_model_flags(model), torch.no_grad(), _stand_in_parameters(traced) as originals, \
            contextlib.redirect_stdout(io.StringIO()) as out:
        model.eval()
        dummy = torch.zeros_like(x)
        if fusion:
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            bounded = lirpa.BoundedModule(traced, (dummy, labels), bound_opts={"loss_fusion": True},
                                          device=x.device)
        else:
            bounded = lirpa.BoundedModule(traced, dummy, device=x.device)
    if out.getvalue().strip():
        logger.debug("auto_LiRPA: %s", out.getvalue().strip())
    state = traced.state_dict(keep_vars=True)
    entry = _Entry(bounded, signature)
    for node in bounded.modules():
        if isinstance(node, BoundParams):
            if id(node.param) not in originals:
                raise CTBenchError(f"auto_LiRPA adapter: parameter node {node.ori_name!r} does not map to "
                                   "a model parameter; use backend='native'")
            node._parameters["param"] = originals[id(node.param)]  # share the model's parameters
    for node in bounded.modules():
        if isinstance(node, BoundBuffers) and node.ori_name in state:
            entry.buffers.append((node, state[node.ori_name]))
        elif isinstance(node, BoundBatchNormalization):
            weight = getattr(node.inputs[1], "param", None)
            for m in body.modules():
                if isinstance(m, _BatchNorm) and m.weight is not None and m.weight is weight:
                    entry.batchnorms.append((node, m))
                    break
            else:
                entry.unmapped_batchnorms += 1
    logger.debug("built auto_LiRPA BoundedModule for %s at %s (fusion=%s)", type(model).__name__,
                 tuple(x.shape), fusion)
    return entry


def _entry(model: nn.Module, x: torch.Tensor, fusion: bool) -> _Entry:
    """The cached entry for ``model`` at input shape/dtype/device of ``x`` (built on a miss).

    With ``fusion`` the model is wrapped in auto_LiRPA's ``CrossEntropyWrapper`` (output
    ``sum_j exp(f_j(x) - f_y(x))``, shape (B, 1)) and built with ``bound_opts={'loss_fusion': True}``.
    The graph is traced at the full input shape, so a new batch size means a new BoundedModule.
    """
    key = (tuple(x.shape), x.dtype, x.device, fusion)
    signature = _signature(model)
    per_model = _cache.setdefault(model, {})
    entry = per_model.get(key)
    if entry is None or entry.signature != signature:
        entry = per_model[key] = _build(model, x, fusion, signature)
    return entry


def _prepare(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, x: torch.Tensor | None,
             y: torch.Tensor | None, fusion: bool):
    """Sync the cached BoundedModule with ``model`` and run its clean forward; returns it and its inputs.

    The box is mapped through a leading Normalization (see :func:`_split_normalization`); the
    BoundedTensor's value is ``x`` or the box midpoint. After the forward, BatchNorm nodes of layers
    with ctbench's frozen clean-batch statistics (train mode) are given exactly those statistics.
    """
    lirpa = _ensure_imported()
    entry = _entry(model, lower, fusion)
    bounded = entry.bounded
    with torch.no_grad():
        for node, buf in entry.buffers:
            node.buffer.copy_(buf)
    bounded.train(model.training)
    norm = _split_normalization(model)[0]
    center = (lower + upper) / 2 if x is None else x
    if norm is not None:
        lower, upper, center = norm(lower), norm(upper), norm(center)
    xt = lirpa.BoundedTensor(center, lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lower, x_U=upper))
    inputs = (xt, y) if fusion else (xt,)
    bounded(*inputs)  # clears old bounds; sets train-mode BN batch statistics
    if entry.unmapped_batchnorms and any(
            batchnorm.is_frozen(m) and m.training for m in model.modules() if isinstance(m, _BatchNorm)):
        raise CTBenchError("auto_LiRPA adapter cannot pass frozen clean-batch statistics to a BatchNorm "
                           "without affine weight; use backend='native' or eval mode")
    for node, bn in entry.batchnorms:
        if bn.training and batchnorm.is_frozen(bn):
            node.current_mean, node.current_var = bn.__dict__[batchnorm._ATTR]
    return bounded, inputs


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default floating dtype (process-global; restored on exit)."""
    previous = torch.get_default_dtype()
    if not dtype.is_floating_point or dtype == previous:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _check_box(lower: torch.Tensor, upper: torch.Tensor) -> None:
    if lower.shape != upper.shape:
        raise CTBenchError(f"lower and upper must have the same shape, got {tuple(lower.shape)} "
                           f"and {tuple(upper.shape)}")
    if torch.any(lower > upper):
        raise CTBenchError("empty input box: some lower > upper")


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def compute_bounds_lirpa(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, method: str,
                         C: torch.Tensor | None = None, x: torch.Tensor | None = None,
                         iterations: int = 20, lr: float = 0.5, bound_upper: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bounds of ``C @ model(z)`` over the box ``lower <= z <= upper`` computed by auto_LiRPA.

    Same contract as the native ``ctbench.bounds.compute_bounds``.

    Args:
        model: a Sequential-style net (Normalization/Conv2d/Linear/BatchNorm/ReLU/Flatten) with K outputs.
        lower, upper: (B, *input_shape) box in input space.
        method: "IBP", "CROWN-IBP", "CROWN" or "alpha-CROWN" (auto_LiRPA's names).
        C: (B, S, K) or (S, K) specification; None bounds the K logits.
        x: optional clean batch (B, *input_shape) used as the BoundedTensor value, which sets the
           train-mode BatchNorm statistics of layers without frozen ones (see module docstring).
        iterations, lr: alpha-CROWN's Adam steps and learning rate (auto_LiRPA's defaults 20, 0.5).
        bound_upper: False skips the upper bound where auto_LiRPA can (CROWN-type methods); ub is None.
    Returns:
        (lb, ub), each (B, S) with C or (B, K) without.
    """
    if method not in METHODS:
        raise CTBenchError(f"unknown bound method {method!r}; known: {', '.join(METHODS)}")
    _check_box(lower, upper)
    self_check()
    if C is not None:
        if C.dim() == 2:
            C = C.unsqueeze(0).expand(lower.shape[0], *C.shape)
        C = C.to(dtype=lower.dtype, device=lower.device)
    with _preserve_model_flags(model):
        bounded, inputs = _prepare(model, lower, upper, x, None, fusion=False)
        if method == "alpha-CROWN":  # its optimizer needs the inputs again (eval-mode BN intended)
            bounded.set_bound_opts({"optimize_bound_args": {"iteration": iterations, "lr_alpha": lr},
                                    "verbosity": 0})
            lb, ub = bounded.compute_bounds(x=inputs, C=C, method=METHODS[method], bound_upper=bound_upper)
        else:  # x=None: reuse the forward above (and its BatchNorm statistics)
            lb, ub = bounded.compute_bounds(x=None, C=C, method=METHODS[method], bound_upper=bound_upper)
    return lb, (ub if bound_upper else None)


def _exp_node(bounded):
    from auto_LiRPA.bound_ops import BoundExp

    for node in bounded.modules():
        if isinstance(node, BoundExp):
            return node
    raise CTBenchError("auto_LiRPA loss-fusion graph has no Exp node")


def lirpa_loss_fusion(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, y: torch.Tensor,
                      x: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """auto_LiRPA's loss-fusion CROWN-IBP upper bound on the cross-entropy loss (Xu et al., 2020, §3.3).

    The model is wrapped as ``g(z, y) = sum_j exp(f_j(z) - f_y(z))`` (auto_LiRPA's
    ``CrossEntropyWrapper``), so ``CE(f(z), y) = log g(z, y)``. Intermediate bounds come from IBP (with
    the last Linear folded with the margins, ``_IBP_loss_fusion``), the final bound from one backward
    (CROWN) pass started at the scalar ``g`` instead of at the K-1 margins. auto_LiRPA relaxes ``exp``
    from above by its chord after shifting by ``m = max_j ub_j`` (the Exp node's ``max_input``), giving
    ``U >= sum_j exp(f_j - f_y - m)`` and the returned bound ``log U + m >= max_{z in box} CE(f(z), y)``
    (recipe of auto_LiRPA's examples/vision/cifar_training.py with CROWN-IBP factor 1:
    ``compute_bounds(IBP=True, method=None)`` then ``compute_bounds(IBP=False, C=None,
    method='backward', bound_lower=False)``, i.e. one ``method='CROWN-IBP'`` call).

    Args:
        lower, upper: (B, *input_shape) box; y: (B,) int64 labels; x: clean batch (see module docstring).
        reduction: "mean" (a scalar, the training loss), "sum" or "none" (shape (B,)).
    Returns:
        Upper bound on the CE loss, >= the CE at every point of the box (in particular at x).
    """
    if reduction not in ("mean", "sum", "none"):
        raise CTBenchError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    _check_box(lower, upper)
    self_check()
    y = y.to(device=lower.device, dtype=torch.long)
    # auto_LiRPA 0.3's GatherElements backward allocates with the default dtype: match the input's.
    with _preserve_model_flags(model), _default_dtype(lower.dtype):
        bounded, _ = _prepare(model, lower, upper, x, y, fusion=True)
        _, ub = bounded.compute_bounds(x=None, C=None, method="CROWN-IBP", bound_lower=False,
                                       bound_upper=True)
        loss = torch.log(ub.reshape(-1)) + _exp_node(bounded).max_input.reshape(-1)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


# --------------------------------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------------------------------
def _tiny_net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net.eval()


def self_check(force: bool = False) -> None:
    """Once per process: IBP and CROWN bounds of a tiny Conv-BN-ReLU-Linear net must contain 512
    sampled points and box corners. Raises :class:`CTBenchError` when auto_LiRPA is unsound here."""
    if _state["self_check"] is not None and not force:
        if _state["self_check"] is not True:
            raise CTBenchError(_state["self_check"])
        return
    _state["self_check"] = True  # re-entrancy: compute_bounds_lirpa below calls self_check()
    try:
        problem = _run_self_check()
    except CTBenchError:
        _state["self_check"] = None
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of auto_LiRPA here is a broken install
        problem = (f"auto_LiRPA failed its self-check on torch {torch.__version__}: "
                   f"{type(exc).__name__}: {exc}")
    if problem is not None:
        _state["self_check"] = problem
        raise CTBenchError(problem)


def _run_self_check() -> str | None:
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = _tiny_net()
    x = torch.rand(2, 1, 8, 8, generator=gen)
    lower, upper = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    C = torch.randn(2, 2, 3, generator=gen)
    u = torch.rand(512, *x.shape, generator=gen)
    corners = (torch.rand(512, *x.shape, generator=gen) > 0.5).to(x.dtype)
    points = torch.cat([lower + u * (upper - lower), lower + corners * (upper - lower)])
    with torch.no_grad():
        out = net(points.flatten(0, 1)).reshape(points.shape[0], x.shape[0], -1)  # (N, B, 3)
        vals = torch.einsum("bsk,nbk->nbs", C, out)
        for method in ("IBP", "CROWN"):
            lb, ub = compute_bounds_lirpa(net, lower, upper, method, C=C)
            tol = 1e-5 * (1 + vals.abs().max())
            if not (torch.all(vals >= lb - tol) and torch.all(vals <= ub + tol)):
                return (f"auto_LiRPA is unsound on this torch version ({torch.__version__}): its "
                        f"{method} bounds do not contain sampled points of a Conv-BN-ReLU-Linear net; "
                        "use backend='native'")
    return None
