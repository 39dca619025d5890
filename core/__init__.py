"""The engine and the services it needs, GPU-agnostic: config, spec, panel, strategies, simulation, metrics."""
