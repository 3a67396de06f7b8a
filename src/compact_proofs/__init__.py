"""compact-proofs: computer-checked lower bounds on the accuracy of Max-of-K transformers.

Reference implementation of "Compact Proofs of Model Performance via Mechanistic
Interpretability" (Gross et al., NeurIPS 2024). Data flows one way:

    model -> training -> accuracy / circuits -> proofs -> flops -> cli
"""

__version__ = "0.1.0"
