"""Using a model exactly: OpenMM energies, importance sampling, Metropolis-Hastings moves."""
