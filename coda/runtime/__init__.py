"""Hosting: one way to start a service. `coda serve` builds a `Host` with the chosen components."""
