"""Specification rows bounded in chunks (``linear.MAX_SPEC_ELEMENTS``): the same bounds, bounded memory.

Every row of the final back-substitution (and, in alpha-CROWN, every row's slopes) is independent of the
others, so bounding the rows in chunks must reproduce the one-shot bounds — checked here on random conv
and dense nets (float64; BatchNorm in eval and frozen-train regimes) with a limit small enough to force
chunks of one or two rows, for CROWN-IBP (with and without cut points), CROWN and alpha-CROWN, lower and
upper bounds, and the gradients of a CROWN-IBP loss. Without chunking, all 199 TinyImageNet margins of
CNN7 need a 6.7-GB coefficient tensor at batch 32 (the out-of-memory kill that motivated this).
"""

import pytest
import torch
from _bounds_helpers import prepare, random_box, random_net, random_spec

from ctbench.bounds import alpha, compute_bounds, linear, unfreeze_bn


def _case(seed):
    model, in_shape, K, bn = random_net(seed)
    model = prepare(model, in_shape, bn, seed)
    lo, hi = random_box(seed, in_shape)
    C = random_spec(seed, lo.shape[0], K, "margin" if seed % 2 else "random")
    return model, lo, hi, C


def _spy_rows(monkeypatch, module):
    """Record the number of rows of every final back-substitution called through ``module``."""
    seen = []
    real = linear.backsub_lower

    def spy(layers, upto, A, *args, **kwargs):
        if upto == len(layers):
            seen.append(A.shape[1])
        return real(layers, upto, A, *args, **kwargs)

    monkeypatch.setattr(module, "backsub_lower", spy)
    return seen


def test_row_chunks_cover_every_row_within_the_limit():
    for B, rows, widest, limit in [(4, 9, 10, 100), (4, 9, 10, 40), (4, 9, 10, 1), (2, 199, 64, 10**9), (3, 5, 7, 21)]:
        chunks = linear.row_chunks(B, rows, widest, limit)
        covered = [r for sl in chunks for r in range(rows)[sl]]
        assert covered == list(range(rows))
        sizes = [sl.stop - sl.start for sl in chunks]
        assert all(s >= 1 for s in sizes)
        assert all(B * s * widest <= limit for s in sizes) or sizes == [1] * rows
    assert len(linear.row_chunks(2, 199, 64, 10**9)) == 1
    assert [sl.stop - sl.start for sl in linear.row_chunks(4, 9, 10, 80)] == [2, 2, 2, 2, 1]


@pytest.mark.parametrize("seed", range(0, 24, 3))
@pytest.mark.parametrize(
    "method, opts",
    [("CROWN-IBP", {}), ("CROWN-IBP", {"cut_points": False}), ("CROWN", {}), ("alpha-CROWN", {"iterations": 3})],
)
def test_chunked_rows_give_the_same_bounds(monkeypatch, seed, method, opts):
    model, lo, hi, C = _case(seed)
    try:
        with torch.no_grad() if method != "alpha-CROWN" else torch.enable_grad():
            whole = compute_bounds(model, lo, hi, method, C, **opts)
            whole_lb = compute_bounds(model, lo, hi, method, C, bound_upper=False, **opts)[0]
            # the input is never wider than the widest layer, so this limit leaves one row per chunk
            monkeypatch.setattr(linear, "MAX_SPEC_ELEMENTS", lo.shape[0] * int(lo[0].numel()))
            seen = _spy_rows(monkeypatch, alpha if method == "alpha-CROWN" else linear)
            chunked = compute_bounds(model, lo, hi, method, C, **opts)
            chunked_lb = compute_bounds(model, lo, hi, method, C, bound_upper=False, **opts)[0]
    finally:
        unfreeze_bn(model)
    S = C.shape[1]
    assert set(seen) == {1} and len(seen) >= 3 * S, seen  # the rows really went one by one
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_lb, whole_lb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [1, 4, 7])
def test_chunked_rows_give_the_same_gradients(monkeypatch, seed):
    model, in_shape, K, bn = random_net(seed)
    lo, hi = random_box(seed, in_shape)
    C = random_spec(seed, lo.shape[0], K, "random")

    def grads():
        model.zero_grad(set_to_none=True)
        prepare(model, in_shape, bn, seed)  # fresh clean-batch statistics (their graph is freed by backward)
        try:
            lb = compute_bounds(model, lo, hi, "CROWN-IBP", C, bound_upper=False)[0]
            lb.logsumexp(1).sum().backward()
        finally:
            unfreeze_bn(model)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole = grads()
    monkeypatch.setattr(linear, "MAX_SPEC_ELEMENTS", 1)
    seen = _spy_rows(monkeypatch, linear)
    chunked = grads()
    assert seen == [1] * C.shape[1]
    assert len(whole) == len(chunked) > 0
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
