"""What the proofs are compared against and what they leave out: sampled accuracy estimates,
stratified sampling, the loss breakdown of each strategy, and the structureless-noise
experiment."""
