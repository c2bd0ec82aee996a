"""A transferable ArBG: one sequence-conditioned network for many capped peptides.

A :class:`TransferableArBG` holds a network and a table of bin ranges shared across molecules;
:meth:`TransferableArBG.for_topology` (or :meth:`~TransferableArBG.for_sequence`) turns it into an
ordinary :class:`~openmm_arbg.ArBG` of one peptide, zero-shot, with the same exact density as any
single-molecule model: usable in :class:`~openmm_arbg.ArBGMove`, importance sampling and every
command, and savable as a single-molecule model file.

What makes one network serve every peptide (``docs/design.md``, "Transferable models"):

* the coordinates are internal coordinates in a canonical residue-by-residue order
  (:meth:`~openmm_arbg.molecule.topology.MolecularGraph.residue_order`), with each stereocentre's
  handedness built into the support, so the same residue gives the same rows everywhere;
* each coordinate is described to the network by its chemistry (the ``"peptide"`` feature scheme
  of :mod:`openmm_arbg.molecule.features`: element, coordinate kind, atom and residue names,
  residue index from both termini, parent atom), and the whole sequence is a context that a
  non-causal encoder reads and every block cross-attends to;
* a turn about one bond changes one coordinate: branch torsions are measured from the earliest
  placed sibling (``branch_torsions="sibling"``, as single-molecule models; files written before
  openmm-arbg 0.3.1 keep the parent-based Z-matrix they were trained with);
* bins are shared per coordinate kind and chemistry (:func:`~openmm_arbg.molecule.features.bin_keys`:
  bond lengths by the elements and bond counts of their atoms, angles by their three atoms), with
  tails, so every coordinate of every molecule has a normalised density with full support.

A molecule with a coordinate whose key the model never saw (an element or bonding pattern absent
from its training peptides) is refused with the list of missing keys.
"""

import os

import numpy as np
import torch

from .arbg import ArBG, as_positions_nm, branches_of
from .model.checkpoint import read_checkpoint, write_checkpoint
from .model.discretizer import _BOUNDS, Discretizer
from .model.network import CausalTransformer, NetworkConfig
from .molecule.features import CONTEXT_SIZES, PEPTIDE_FEATURE_SIZES, bin_keys
from .molecule.representation import PERIODIC, RESIDUE_ORDER, InternalRepresentation
from .molecule.stereochemistry import StereoChecker
from .molecule.topology import MolecularGraph

__all__ = ["TransferableArBG", "molecule_representation", "peptide_sequence", "is_transferable_file"]

KIND = "transferable"


def molecule_representation(graph, reference_positions, branch_torsions="sibling"):
    """Internal coordinates in the canonical residue order, with the handedness of the reference
    structure's stereocentres built in (the representation every transferable model uses).

    ``branch_torsions="sibling"`` measures every later substituent of a branch atom from its
    earliest placed sibling (models created by openmm-arbg 0.3.1 and later); ``"parent"`` is the
    Z-matrix of earlier transferable models, kept bit for bit."""
    branches = branches_of(branch_torsions)
    ref = np.asarray(reference_positions, dtype=np.float64).reshape(graph.n_atoms, 3)
    return InternalRepresentation(graph, stereo="relative-torsion", reference_positions=ref, order=RESIDUE_ORDER,
                                  branches=branches)


def peptide_sequence(graph):
    """One-letter sequence of a capped peptide's residues (caps left out; ``X`` for unknown ones)."""
    from .simulation.peptides import THREE_TO_ONE

    return "".join(THREE_TO_ONE.get(name, "X") for name, _ in graph.residues() if name not in ("ACE", "NME", "NH2"))


def is_transferable_file(path):
    """True if ``path`` is a transferable model file (reads only the file's metadata)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            return KIND in json.loads((f.metadata() or {}).get("openmm_arbg", "{}"))
    except Exception:  # not a readable checkpoint: let the loader say what is wrong
        return False


class TransferableArBG:
    """One network and shared bins for many capped peptides.

    Parameters
    ----------
    network : CausalTransformer
        Reads the ``"peptide"`` features and a sequence context.
    bins : dict of str -> (lo, hi, tail_scale)
        Binned range and tail scale (units of the coordinate) of every bin key.
    n_bins : int
        Bins per coordinate (``network.cfg.vocab_size - 2``).
    sequences : list of str
        The training sequences (stored in the model file).
    metadata : dict, optional
    branch_torsions : {"parent", "sibling"}
        How branch torsions are measured (:func:`molecule_representation`). New models
        (:meth:`create`) use ``"sibling"``; files without the setting were written with ``"parent"``.

    Examples
    --------
    >>> model = TransferableArBG.load("peptides.safetensors")  # doctest: +SKIP
    >>> arbg = model.for_sequence("KT")  # an ArBG of Ace-Lys-Thr-Nme, no training step
    >>> x, log_q = arbg.sample(1000)
    """

    def __init__(self, network, bins, n_bins, sequences=(), metadata=None, branch_torsions="parent"):
        branches_of(branch_torsions)  # a valid setting
        self.branch_torsions = branch_torsions
        self.network = network
        self.bins = {str(k): tuple(float(x) for x in v) for k, v in bins.items()}
        self.n_bins = int(n_bins)
        if self.n_bins + 2 != network.cfg.vocab_size:
            raise ValueError(f"n_bins={n_bins} but the network reads {network.cfg.vocab_size - 2} bins per coordinate")
        if list(network.cfg.context_sizes) != CONTEXT_SIZES or list(network.cfg.feature_sizes) != PEPTIDE_FEATURE_SIZES:
            raise ValueError("the network does not read the peptide features and sequence context of a transferable model")
        self.sequences = [str(s) for s in sequences]
        self.metadata = dict(metadata or {})
        self.checkpoint_path = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, molecules, network=None, n_bins=256, margin=0.1, seed=0, branch_torsions="sibling"):
        """A new (untrained) model whose shared bins are fitted to the frames of several peptides.

        Parameters
        ----------
        molecules : list of (topology, positions)
            Each peptide's topology and frames (n, N, 3) nm (or an ``mdtraj.Trajectory``, or a
            function that loads either: read once, then dropped); the first frame is the
            reference stereochemistry.
        network : dict or NetworkConfig, optional
            Network size (``n_layer``, ``n_head``, ``d_model``, ...); rotary positions, so any length.
        n_bins : int
        margin : float
            Fraction of each key's data range added on both sides of its binned range.
        seed : int
            Seed of the initial weights.
        branch_torsions : {"sibling", "parent"}
            Branch torsions from the earliest placed sibling (default) or, as transferable models
            before openmm-arbg 0.3.1, from the parent's neighbours (:func:`molecule_representation`).
        """
        branches_of(branch_torsions)  # refused before any frames are read
        if not molecules:
            raise ValueError("a transferable model needs the frames of at least one molecule")
        values, kinds = {}, {}
        sequences = []
        for topology, positions in molecules:
            graph = MolecularGraph.from_topology(topology)
            x = as_positions_nm(positions() if callable(positions) else positions, graph.n_atoms, graph,
                                "training positions")
            rep = molecule_representation(graph, x[0], branch_torsions)
            z, _ = rep.to_model_coordinates(torch.as_tensor(x))
            for j, key in enumerate(bin_keys(graph, rep)):
                values.setdefault(key, []).append(z[:, j].numpy())
                kinds[key] = rep.coordinate_kinds[j]
            sequences.append(peptide_sequence(graph))
        bins = {}
        for key, chunks in values.items():
            v = np.concatenate(chunks)
            if not np.isfinite(v).all():
                raise ValueError(f"coordinate key {key}: the frames contain NaN or inf")
            lb, ub = _BOUNDS[kinds[key]]
            if kinds[key] == PERIODIC:
                bins[key] = (lb, ub, 1.0)
                continue
            span = max(v.max() - v.min(), 1e-6 * max(abs(v.max()), 1e-3))
            m = margin * span
            bins[key] = (max(v.min() - m, lb), min(v.max() + m, ub), max(m, 1e-9))
        cfg = network if isinstance(network, NetworkConfig) else NetworkConfig.from_dict(
            dict(dict(n_layer=3, n_head=4, d_model=96), **dict(network or {})))
        cfg = NetworkConfig.from_dict(dict(cfg.to_dict(), vocab_size=int(n_bins) + 2, position_encoding="rope",
                                           max_positions=0, feature_sizes=PEPTIDE_FEATURE_SIZES,
                                           context_sizes=CONTEXT_SIZES))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = CausalTransformer(cfg)
        return cls(net, bins, n_bins, sequences, branch_torsions=branch_torsions)

    def for_topology(self, topology, reference_positions):
        """The :class:`~openmm_arbg.ArBG` of one peptide, sharing this model's network.

        Parameters
        ----------
        topology : openmm.app.Topology, mdtraj.Topology or MolecularGraph
            A capped peptide (or any molecule whose coordinate keys the model has seen).
        reference_positions : array_like (N, 3) nm
            A structure with the stereochemistry to sample (for example the built peptide).
        """
        graph = MolecularGraph.from_topology(topology)
        ref = as_positions_nm(reference_positions, graph.n_atoms, graph, "reference positions")[0]
        rep = molecule_representation(graph, ref, self.branch_torsions)
        keys = bin_keys(graph, rep)
        missing = sorted(set(keys) - set(self.bins))
        if missing:
            raise ValueError(
                f"this transferable model has never seen coordinates of {len(missing)} kind{'s' if len(missing) > 1 else ''} "
                "in this molecule "
                f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}): its training peptides "
                f"({', '.join(self.sequences) or 'none recorded'}) lack those atoms or bonding patterns; "
                "train or fine-tune on MD of this molecule"
            )
        lo, hi, scale = (np.array([self.bins[k][c] for k in keys]) for c in range(3))
        discretizer = Discretizer(rep.coordinate_kinds, lo, hi, self.n_bins, scale)
        stereo = StereoChecker(graph).record(ref)
        metadata = dict(transferable=dict(sequences=self.sequences, path=self.checkpoint_path),
                        sequence=peptide_sequence(graph))
        model = ArBG(graph, rep, discretizer, stereo, self.network, rep.anchors, metadata, feature_scheme="peptide")
        return model.to(self.device)

    def for_sequence(self, sequence):
        """The :class:`~openmm_arbg.ArBG` of the capped peptide Ace-``sequence``-Nme (one-letter
        codes), built by :func:`~openmm_arbg.simulation.peptides.build_capped_peptide`."""
        from .simulation.peptides import build_capped_peptide

        topology, positions = build_capped_peptide(sequence)[:2]
        return self.for_topology(topology, np.asarray(positions.value_in_unit(positions.unit)))

    # ------------------------------------------------------------------ description
    @property
    def device(self):
        return self.network.head.weight.device

    def to(self, device):
        self.network.to(device)
        return self

    def n_parameters(self):
        return self.network.n_parameters()

    def __repr__(self):
        return (f"TransferableArBG({len(self.bins)} bin keys, {self.n_bins} bins, {self.n_parameters()} parameters, "
                f"{self.branch_torsions} branch torsions, trained on {len(self.sequences)} sequences)")

    # ------------------------------------------------------------------ storage
    def checkpoint_config(self):
        stored = {"bins": {k: list(v) for k, v in self.bins.items()}, "n_bins": self.n_bins, "sequences": self.sequences}
        if self.branch_torsions != "parent":  # files of earlier versions (no key) keep their Z-matrix
            stored["branch_torsions"] = self.branch_torsions
        return {KIND: stored, "network": self.network.cfg.to_dict(), "metadata": self.metadata}

    def network_tensors(self):
        return {f"network.{k}": v for k, v in self.network.state_dict().items()}

    def save(self, path):
        """Write the model to one safetensors file (configuration as JSON metadata, weights)."""
        tensors = self.network_tensors()
        bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"refusing to save a model whose weights contain NaN or inf ({', '.join(bad[:3])})")
        return write_checkpoint(path, self.checkpoint_config(), tensors)

    @classmethod
    def from_checkpoint(cls, config, tensors, path="checkpoint"):
        if KIND not in config:
            raise ValueError(f"{path} is a single-molecule model, not a transferable one; load it with ArBG.load")
        t = config[KIND]
        try:
            net = CausalTransformer(NetworkConfig.from_dict(config["network"]))
            net.load_state_dict({k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")})
            model = cls(net, t["bins"], t["n_bins"], t.get("sequences", []), config.get("metadata", {}),
                        branch_torsions=t.get("branch_torsions", "parent"))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: the transferable model's configuration or weights are corrupt ({exc})") from None
        return model

    @classmethod
    def load(cls, path, device="cpu"):
        """Load a model written by :meth:`save` (or by the transferable trainer)."""
        config, tensors = read_checkpoint(path)
        model = cls.from_checkpoint(config, tensors, path)
        model.checkpoint_path = os.path.abspath(path)
        model.network.eval()
        return model.to(device)

    @classmethod
    def from_pretrained(cls, name, device="cpu"):
        """A transferable model shipped with the package, by name."""
        from .pretrained import pretrained_path

        return cls.load(pretrained_path(name), device=device)
