"""Systems, capped peptides, Langevin MD, umbrella sampling and analytic test systems."""
