"""An independent checker of certificate files: a second, small implementation of verification.

`check_certificates(model_path, certificate_path)` reads a model file and a certificate file
itself (numpy + safetensors only; it imports nothing from the project's search or verification
code) and recomputes, for every certificate, the number of inputs x in {0..v-1}^k that the
certificate proves correct: the last-position logits satisfy l_m > l_j for all j != m,
m = max(x). Strategies: `brute-force`, `cubic` (SPEC §5), the 100 sub-cubic configurations
(SPEC §6) with the project's SOUND rules (docs/method.md): the mean+diff step uses R_min when
a < abar and is evaluated at both attention extremes; a gap g leaves m - g + 1 token values;
the rank-1 EQKE error includes the cross terms; the `svd` error uses a certified sigma_1
bound; cells q = m, c >= 1 need m >= g; and the strategies new here (not in the paper),
`separable-lite` and `separable`: a cell per query, max token and set of non-query positions
holding smaller tokens, exact unnormalised attention weights and a bound separable over
positions, the assignments counted exactly (`separable`, cells of up to 2 free positions, 3
when the query is the max) or by the pure rule; both refuse n_ctx > 10; and
`separable-subcubic`, separable-lite's pure rule in O(v^2) work (one threshold per set size,
members a prefix of tokens; any n_ctx). Every strategy folds non-zero biases in exactly, by
the identities of `paths`: brute force, cubic and separable through the path matrices,
sub-cubic in its own decomposition (b_Q in the queries, hence in route A's factor and as an
exact row of route B's EQKE_hat; b_K in the positional keys; b_V in PVOU; b_O W_U + b_U in
the direct path).

Arithmetic is float64 on the float32 weights. Where the main verifier compares a bound with 0,
the checker demands a margin: a cell counts only if B < -SAFETY * scale (scale = the size of
the logit-difference terms), so that a different summation order can make the checker lower,
never higher (the separable proofs also take off what attention weights that underflow to
subnormals or 0 can hide). Brute force counts x correct iff
l_m - max_{j != m} l_j > TIE * max_j |l_j|. Certificate directions of absurd size are rescaled
as the main verifier rescales them.

Like the main verifier's `--fast` mode, this is float64 arithmetic with a safety margin, not a
rigorous proof: on models built for catastrophic cancellation (benchmarks/unsound) it
reproduces the float64 counts of `--fast`, which can exceed the exact ones; the main
verifier's default mode, rigorous (ball / interval arithmetic) verification, is the answer
there. What the checker guards against is an error in the main code.

Modules: `model_file` and `certificate_file` read and validate the two files; `paths` holds the
path matrices and shared helpers; `brute_force`, `cubic`, `subcubic` (with `subcubic_bounds`),
`separable` and `separable_subcubic` re-implement one proof family each; `run` checks a whole
certificate file.
"""

from compact_proofs.soundness.checker.brute_force import brute_force_count
from compact_proofs.soundness.checker.certificate_file import load_certificate_file
from compact_proofs.soundness.checker.cubic import cubic_count
from compact_proofs.soundness.checker.model_file import Model, load_model_file, weights_digest
from compact_proofs.soundness.checker.run import CheckResult, check_certificates, check_strategy
from compact_proofs.soundness.checker.separable import separable_count, separable_lite_count
from compact_proofs.soundness.checker.separable_subcubic import separable_subcubic_count
from compact_proofs.soundness.checker.subcubic import subcubic_count

__all__ = [
    "CheckResult", "Model", "brute_force_count", "check_certificates", "check_strategy",
    "cubic_count", "load_certificate_file", "load_model_file", "separable_count",
    "separable_lite_count", "separable_subcubic_count", "subcubic_count", "weights_digest",
]  # fmt: skip
