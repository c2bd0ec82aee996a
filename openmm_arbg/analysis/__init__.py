"""Free energies, the ArBG paper's metrics and plots, warnings from sampling diagnostics, and
observables (dihedrals, the alanine dipeptide basins)."""
