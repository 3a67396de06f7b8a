"""How a bound is proven and measured: path matrices, the strategy interface, one module per
proof family, the registry, certificates, the runner, and FLOP accounting."""
