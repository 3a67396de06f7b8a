"""Many models, many strategies: the sweep (train, prove, record), the results store, and the
report (Table 1, figures, html)."""
