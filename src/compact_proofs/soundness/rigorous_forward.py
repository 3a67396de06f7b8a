"""Interval forward pass: logits that provably enclose the model's exact real logits.

Contract. `IntervalForward(model).logits(tokens)` returns an `Interval` [n, d_vocab] whose
[lo, hi] contains, for every input row, the last-position logits that
`AttnOnlyTransformer.forward` defines, evaluated in *exact real arithmetic* on the model's
stored parameters (float32 -> float64 is exact, so the weights are exact points). Any number of
heads and any biases. Soundness rests only on the inclusion isotonicity of the operations of
`soundness.interval` (its rounding model, incl. LIBM_REL for exp, is documented there).

`certify(logits, m, rel_tol)` turns such an enclosure into verdicts: an input is *certified*
iff the enclosure proves l_m - l_j > rel_tol * max_i |l_i| for every j != m (m the max token),
so a certified input is classified correctly in exact arithmetic (exact ties never are).

The computation follows `AttnOnlyTransformer.forward` term by term:

    r_p = W_E[x_p] + W_pos[p]                          residual stream
    q_h = r_{k-1} W_Q[h] + b_Q[h]
    key_{h,p} = r_p W_K[h] + b_K[h],   val_{h,p} = r_p W_V[h] + b_V[h]
    s_{h,p} = (q_h . key_{h,p}) / sqrt(d_head)         (sqrt(d_head) enclosed by enclose_sqrt)
    a_{h,p} = softmax_p(s_{h,p})
    l = (r_{k-1} + sum_h (sum_p a_{h,p} val_{h,p}) W_O[h] + b_O) W_U + b_U
      = [r_{k-1} W_U + (b_O W_U + b_U)] + sum_h sum_p a_{h,p} [val_{h,p} W_O[h] W_U]

The last line only reassociates (distributivity, exact in real arithmetic; no use of
sum_p a = 1), so enclosing it encloses the forward pass. Every bracket depends on one
(query token) or one (head, position, token) only, as do the raw scores q_h . key_{h,p}:
those tables are formed once with interval matrix products, as intervals S (scores), G
(value-path logits) and C (direct logits).

Per input, the weighted sum l_j = C_j + sum_i a_i G_ij over the N = h k pairs i = (h, p) is
evaluated in midpoint-radius form (m: midpoint, r: radius, both from `Interval.mid_rad`):

    l~_j = fl(sum_i fl(am_i Gm_ij) + Cm_j)
    R_j  = Cr_j + gamma_{N+1} |Cm_j| + sum_i [|am_i| (Gr_ij + gamma_{N+1} |Gm_ij|)
                                              + ar_i (|Gm_ij| + Gr_ij)] + N 2^-1074

|a G - am Gm| <= |am| Gr + ar (|Gm| + Gr) bounds the uncertainty, gamma_{N+1} (|Cm| +
sum |am Gm|) the rounding of the (N+1)-term float dot product, N 2^-1074 its underflow. R is
computed from tables precomputed with upward rounding; its own float evaluation (2N + 1
non-negative terms) is covered by a factor 1 + 4 gamma_{2N+3} and 2N 2^-1074 more. So
l_j lies in [l~_j - R_j, l~_j + R_j] (outward rounded), at the cost of three multiply-adds per
(input, head, position, logit): the same order as the plain float forward's value path.

Softmax. Written as a_p = 1 / (1 + sum_{p' != p} exp(s_p' - s_p)): the real softmax, with
the p' = p term replaced by its exact value 1. Every operation in it is monotone, so interval
scores give an enclosure that is tight up to rounding (no dependency blow-up); an overflowing
exp gives weight [0, tiny], and NaN (possible only after overflow) never certifies anything.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compact_proofs.model.transformer import AttnOnlyTransformer
from compact_proofs.soundness import interval as iv
from compact_proofs.soundness.interval import SUBNORMAL_ULP as SUBNORMAL
from compact_proofs.soundness.interval import (
    Interval,
    enclose_sqrt,
    gamma,
    matmul,
    round_down,
    round_up,
)

INF = float("inf")
EXP_CAP = 700.0  # exp(700) ~ 1e304: k such terms still sum to a finite float
CHUNK = 2**13  # inputs per vectorised chunk: memory ~ 2 CHUNK h k 3 v doubles (~50 MB at v=64)


def softmax_enclosure(scores: Interval) -> Interval:
    """Enclosure of softmax over the last axis of any member of `scores` (module docstring).

    Post: for every real s in scores, softmax(s) lies in the result elementwise.
    Positions are looped over (k^2 operations on contiguous [...] slices: fast for small k).
    """
    k = scores.shape[-1]
    order = (scores.lo.dim() - 1, *range(scores.lo.dim() - 1))
    lo, hi = (t.permute(order).contiguous() for t in (scores.lo, scores.hi))
    s = [Interval(lo[p], hi[p]) for p in range(k)]
    weights = []
    for p in range(k):
        denominator: Interval | float = 1.0  # the exact p' = p term
        for other in range(k):
            if other != p:
                diff = s[other] - s[p]
                # Lowering a lower end keeps an enclosure; capping it at EXP_CAP keeps the
                # sum of the lower ends finite (overflowing to inf would only lose tightness).
                diff = Interval(diff.lo.clamp(max=EXP_CAP), diff.hi)
                denominator = diff.exp() + denominator
        if isinstance(denominator, Interval):
            weights.append(1.0 / denominator)
        else:  # a single position: weight exactly 1
            weights.append(Interval.point(torch.ones_like(s[p].lo)))
    return iv.stack(weights, -1)


class IntervalForward:
    """Interval enclosure of `AttnOnlyTransformer.forward` (see the module docstring).

    Construction tabulates, as intervals, the scores S [h, q, p, t] (query token q, token t
    at position p), the value-path logits G [h, p, t, v] and the direct logits C [q, v];
    `logits(tokens)` is then vectorised over the inputs, in chunks of `CHUNK`.
    """

    def __init__(self, model: AttnOnlyTransformer) -> None:
        cfg = model.cfg
        v, k, d, h, e = cfg.d_vocab, cfg.n_ctx, cfg.d_model, cfg.n_heads, cfg.d_head
        self.cfg = cfg
        self.device = model.W_E.device
        w = {n: Interval.point(t.detach().to(torch.float64)) for n, t in model.weights().items()}
        resid = (w["W_E"][None] + w["W_pos"][:, None]).reshape(k * v, d)  # row p v + t
        query_resid = resid[(k - 1) * v :]  # [v, d]: the query position
        queries = matmul(query_resid, w["W_Q"]) + w["b_Q"][:, None, :]  # [h, v, e]
        keys = matmul(resid, w["W_K"]) + w["b_K"][:, None, :]  # [h, k v, e]
        raw = matmul(queries, keys.permute(0, 2, 1))  # [h, q, k v]: q_h . key_{h,p}
        self.scores = (raw / enclose_sqrt(e)).reshape(h, v, k, v)  # [h, q, p, t]
        values = matmul(resid, w["W_V"]) + w["b_V"][:, None, :]  # [h, k v, e]
        value_logits = matmul(matmul(values, w["W_O"]), w["W_U"])  # [h, k v, v]
        direct = matmul(query_resid, w["W_U"]) + (matmul(w["b_O"][None], w["W_U"]) + w["b_U"])

        # midpoint-radius tables (module docstring), every entry rounded up
        self.n_terms = n = h * k
        g = gamma(n + 1)
        g_mid, g_rad = value_logits.reshape(h, k, v, v).mid_rad()
        g_abs = g_mid.abs()
        rel = round_up(g_rad + round_up(g * g_abs))  # multiplies |am|
        unc = round_up(g_abs + g_rad)  # multiplies ar
        self.table = torch.stack([g_mid, rel, unc], dim=3)  # [h, p, t, 3, v]
        c_mid, c_rad = direct.mid_rad()
        self.direct_mid = c_mid  # [q, v]
        self.direct_rad = round_up(c_rad + round_up(g * c_mid.abs()))

    def _logits_chunk(self, tokens: Tensor) -> Interval:
        k = tokens.shape[1]
        pos = torch.arange(k, device=tokens.device)[None, :]
        query_tok = tokens[:, -1]
        scores = self.scores[:, query_tok[:, None], pos, tokens]  # [h, n, k]
        a_mid, a_rad = softmax_enclosure(scores).mid_rad()
        weights = torch.stack([a_mid, a_mid.abs(), a_rad], dim=-1)  # [h, n, k, 3]
        sums = (weights[..., None] * self.table[:, pos, tokens]).sum(2).sum(0)  # [n, 3, v]
        center = sums[:, 0] + self.direct_mid[query_tok]
        n = self.n_terms
        rad = (sums[:, 1] + sums[:, 2] + self.direct_rad[query_tok]) * (1 + 4 * gamma(2 * n + 3))
        rad = round_up(rad + 3 * n * SUBNORMAL)
        return Interval(round_down(center - rad), round_up(center + rad))  # [n, v]

    def logits(self, tokens: Tensor) -> Interval:
        """Interval [n, d_vocab] enclosing the exact logits of every input row (int [n, k])."""
        tokens = tokens.to(self.device)
        parts = [self._logits_chunk(tokens[i : i + CHUNK]) for i in range(0, len(tokens), CHUNK)]
        if len(parts) == 1:
            return parts[0]
        return Interval(torch.cat([p.lo for p in parts]), torch.cat([p.hi for p in parts]))

    def verdicts(self, tokens: Tensor, rel_tol: float) -> tuple[Tensor, Tensor]:
        """(certified, undecided) bool [n] per input: see `certify`; chunked."""
        tokens = tokens.to(self.device)
        out = [
            certify(self._logits_chunk(chunk), chunk.max(dim=-1).values, rel_tol)
            for chunk in tokens.split(CHUNK)
        ]
        if not out:
            empty = torch.zeros(0, dtype=torch.bool, device=self.device)
            return empty, empty
        return torch.cat([c for c, _ in out]), torch.cat([u for _, u in out])


def certify(logits: Interval, m: Tensor, rel_tol: float) -> tuple[Tensor, Tensor]:
    """Verdicts from an enclosure `logits` [n, v] of the exact logits, max tokens m [n].

    certified[i]: proven l_m - l_j > rel_tol * max_j |l_j| for all j != m (exact arithmetic);
    undecided[i]: not certified, and not proven l_m - l_j < -rel_tol * max_j |l_j| for some j
    either (a possible tie at this tolerance; diagnostic only).
    The margin min_{j != m} (l_m - l_j) is enclosed by [lo_m - max hi_j, hi_m - max lo_j]; the
    ~2x tighter direct difference form buys nothing since the threshold rel_tol * scale is far
    above the enclosure widths.
    """
    is_m = torch.zeros(logits.shape, dtype=torch.bool, device=m.device)
    is_m.scatter_(-1, m[:, None], True)
    lo_m = logits.lo.gather(-1, m[:, None])[:, 0]
    hi_m = logits.hi.gather(-1, m[:, None])[:, 0]
    others_hi = logits.hi.masked_fill(is_m, -INF).amax(dim=-1)
    others_lo = logits.lo.masked_fill(is_m, -INF).amax(dim=-1)
    margin_lo = torch.nextafter(lo_m - others_hi, lo_m.new_tensor(-INF))
    margin_hi = torch.nextafter(hi_m - others_lo, hi_m.new_tensor(INF))
    scale_hi = torch.maximum(logits.lo.abs(), logits.hi.abs()).amax(dim=-1)
    threshold = torch.nextafter(rel_tol * scale_hi, scale_hi.new_tensor(INF))
    certified = margin_lo > threshold
    # lower end of the scale (>= 0): each |l_j| >= the distance of its interval from 0
    scale_lo = torch.where(logits.lo > 0, logits.lo, (-logits.hi).clamp(min=0.0)).amax(dim=-1)
    refuted = margin_hi < -torch.nextafter(rel_tol * scale_lo, scale_lo.new_tensor(-INF))
    return certified, ~certified & ~refuted
