"""Models and references shipped with the package, by name.

Every file here was produced by the package's own commands (``docs/benchmarks.md`` gives them);
nothing is downloaded.

>>> from openmm_arbg.pretrained import list_pretrained
>>> sorted(list_pretrained())  # doctest: +NORMALIZE_WHITESPACE
['alanine_dipeptide_vacuum', 'alanine_dipeptide_vacuum_300K_600K', 'alanine_dipeptide_vacuum_phi_psi_first',
 'alanine_dipeptide_vacuum_self_trained', 'capped_peptides_transferable']
"""

import json
from importlib import resources

__all__ = ["PRETRAINED", "TRANSFERABLE", "REFERENCES", "list_pretrained", "pretrained_path", "reference_path", "load_reference"]

PRETRAINED = {
    "alanine_dipeptide_vacuum": (
        "alanine_dipeptide_vacuum.safetensors",
        "alanine dipeptide, vacuum (openmmtools, no constraints), 300 K; internal coordinates; trained on 20 ns "
        "of MD plus 20 000 umbrella-sampling frames of phi > 0",
    ),
    "alanine_dipeptide_vacuum_300K_600K": (
        "alanine_dipeptide_vacuum_300K_600K.safetensors",
        "alanine dipeptide, vacuum, trained on 300 K and 600 K MD (a broader proposal)",
    ),
    "alanine_dipeptide_vacuum_phi_psi_first": (
        "alanine_dipeptide_vacuum_phi_psi_first.safetensors",
        "alanine dipeptide, vacuum, 300 K; phi and psi are model coordinates 0 and 1, generated first (--first-torsions "
        "phi psi), for arbg profile and fixed dihedrals; trained only on the frames of 72 umbrella windows of 50 ps on phi "
        "(its own phi marginal is that of the windows, nearly flat: a conditional model, not a whole-molecule proposal)",
    ),
    "alanine_dipeptide_vacuum_self_trained": (
        "alanine_dipeptide_vacuum_self_trained.safetensors",
        "alanine dipeptide, vacuum, 300 K; the README's no-umbrella recipe (2 ns of MD at 300 K and 1000 K, seeded "
        "segments, 1500 training steps, 8 rounds of self-training) with sibling-relative branch torsions: "
        "ESS/N 44-49 % at 10^4 proposals in nine draws of ten, no umbrella frames (docs/benchmarks.md section 23)",
    ),
}

TRANSFERABLE = {
    "capped_peptides_transferable": (
        "capped_peptides_transferable.safetensors",
        "transferable (sequence-conditioned) model of capped peptides Ace-X-Nme and Ace-XY-Nme, amber14 + OBC1, 310 K; "
        "branch torsions from a sibling; trained on 0.25 ns of MD each (five basin-seeded starts) of all 20 single "
        "residues and 58 pairs (the sequences are stored in the file), 30 minutes on two CPU threads "
        "(docs/benchmarks.md section 27): TransferableArBG.from_pretrained(name).for_sequence('...'), or "
        "--model NAME --system peptide:SEQUENCE",
    ),
}
PRETRAINED.update(TRANSFERABLE)

REFERENCES = {
    "alanine_dipeptide_vacuum_300K_umbrella": (
        "alanine_dipeptide_vacuum_300K_umbrella.json",
        "umbrella sampling on (phi, psi) + MBAR: populations and free energies with standard errors",
    ),
    "alanine_dipeptide_vacuum_300K_phi_umbrella": (
        "alanine_dipeptide_vacuum_300K_phi_umbrella.json",
        "umbrella sampling on phi (72 windows of 1 ns, k = 1000 kJ/mol/rad^2) + MBAR: phi > 0 and the phi profile "
        "(36 bins) with standard errors",
    ),
}


def list_pretrained():
    """Names and descriptions of the shipped models."""
    return {name: description for name, (_, description) in PRETRAINED.items()}


def _path(table, name, what):
    if name not in table:
        raise ValueError(f"no shipped {what} named {name!r}; choose one of {sorted(table)}")
    return str(resources.files(__name__) / table[name][0])


def pretrained_path(name):
    """Path of a shipped model file."""
    return _path(PRETRAINED, name, "model")


def reference_path(name):
    """Path of a shipped reference (JSON)."""
    return _path(REFERENCES, name, "reference")


def load_reference(name="alanine_dipeptide_vacuum_300K_umbrella"):
    """A shipped reference: the ``result.json`` of ``arbg umbrella`` (populations and free
    energies with standard errors, and the command that produced them)."""
    with open(reference_path(name)) as f:
        return json.load(f)
