"""Free energies, the ArBG paper's metrics and plots, and peptide observables."""
