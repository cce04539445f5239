"""Hot-path benchmarks: `python -m bench [--quick] [names...]`; figures are printed, never asserted."""
