"""Soundness machinery under the proofs: directed rounding, ball and interval arithmetic, the
rigorous forward pass, the exact rational reference, and the independent certificate checker
(`checker`, which imports nothing from the rest of the package)."""
