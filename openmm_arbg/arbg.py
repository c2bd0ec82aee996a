"""``ArBG``: an autoregressive Boltzmann generator for one molecule.

An ``ArBG`` is a molecule (its graph, the representation that maps shapes to model coordinates,
the bins of every coordinate, the coordinates' features, the reference stereochemistry) plus a
network, which several molecules may share.

Contract (``docs/design.md``): ``log_prob(x)`` is the log density of the model's proposal over
configurations modulo rigid-body motion, in the measure in which ``exp(-u(x))`` is the Boltzmann
density, so ``-u(x) - log_prob(x)`` is the exact log importance weight up to one constant, and
``log_prob`` of what :meth:`ArBG.sample` returned equals the ``log_q`` it reported.
"""

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .model.checkpoint import read_checkpoint, write_checkpoint
from .model.density import AutoregressiveDensity
from .model.discretizer import Discretizer
from .model.network import CausalTransformer, NetworkConfig
from .molecule.features import FEATURE_SIZES, features_for
from .molecule.representation import SIBLING, build_representation, canonical_frame, place_in_frame, to_local_frame
from .molecule.stereochemistry import StereoChecker
from .molecule.topology import MolecularGraph, check_same_molecule
from .utils import Settings

BRANCH_TORSIONS = {"sibling": SIBLING, "parent": None}  # ModelConfig.branch_torsions -> InternalRepresentation(branches=)


def branches_of(branch_torsions):
    """``InternalRepresentation(branches=)`` of a ``branch_torsions`` setting ("sibling" or "parent")."""
    if branch_torsions not in BRANCH_TORSIONS:
        raise ValueError(f"branch_torsions must be one of {sorted(BRANCH_TORSIONS)}; got {branch_torsions!r}")
    return BRANCH_TORSIONS[branch_torsions]

__all__ = ["ArBG", "ModelConfig", "as_positions_nm"]


@dataclass
class ModelConfig(Settings):
    """How a model is fitted to a molecule (the network's size is :class:`NetworkConfig`).

    Parameters
    ----------
    representation : {"internal", "cartesian"}
        Model coordinates: Z-matrix internal coordinates or Cartesian coordinates in the anchor frame.
    n_bins : int
        Bins per coordinate.
    margin : float
        Fraction of each coordinate's data range added on both sides of its binned range.
    seed : int
        Seed of a new network's initial weights.
    first_torsions : list of str
        Dihedrals that become the first torsion coordinates of the model, in this order:
        ``phiK``/``psiK`` (residue K, from 1), ``phi``/``psi`` or ``i,j,k,l`` atom indices. Fixing or
        profiling a dihedral needs it to be a model coordinate (:meth:`ArBG.dihedral_coordinate`);
        early in the order its conditional is the sharpest.
    branch_torsions : {"sibling", "parent"}
        Internal representation: the torsion of a branch atom's later substituents is measured from
        their earliest placed sibling (``"sibling"``, about +-120 degrees whatever the rotamer) or
        from a neighbour of the parent's parent (``"parent"``, the Z-matrix of models before
        openmm-arbg 0.3, which repeats every side-chain rotation in each of its substituents).
    """

    representation: str = "internal"
    n_bins: int = 256
    margin: float = 0.1
    seed: int = 0
    first_torsions: list = field(default_factory=list)
    branch_torsions: str = "sibling"

    what = "model settings"

    def __post_init__(self):
        if self.representation not in ("internal", "cartesian"):
            raise ValueError(f"representation must be 'internal' or 'cartesian'; got {self.representation!r}")
        if isinstance(self.n_bins, bool) or int(self.n_bins) != self.n_bins or self.n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2; got {self.n_bins!r}")
        if not (float(self.margin) >= 0 and np.isfinite(self.margin)):
            raise ValueError(f"margin must be a finite number >= 0; got {self.margin!r}")
        if self.first_torsions and self.representation != "internal":
            raise ValueError("first_torsions needs representation 'internal': Cartesian coordinates have no torsions")
        branches_of(self.branch_torsions)



def as_positions_nm(positions, n_atoms=None, graph=None, what="positions"):
    """Positions as a float64 array (n, N, 3) in nm.

    Accepts an ``mdtraj.Trajectory`` (its topology is checked against ``graph``), an OpenMM
    ``Quantity`` (any length unit), a list of ``Vec3``, or an array (N, 3) or (n, N, 3) in nm.
    Raises ``ValueError`` with what is wrong for a wrong shape, atom count or order, NaN/inf
    values, or bond lengths that are not in nm (with ``graph``).
    """
    import mdtraj
    import openmm.unit as unit

    if isinstance(positions, mdtraj.Trajectory):
        if graph is not None:
            check_same_molecule(graph, MolecularGraph.from_topology(positions.topology), what=f"the topology of the {what}")
        positions = positions.xyz
    elif unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    try:
        arr = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numbers of shape (n_atoms, 3) or (n_frames, n_atoms, 3) in nm ({exc})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (n_atoms, 3) or (n_frames, n_atoms, 3) in nm; got {arr.shape}")
    if n_atoms is not None and arr.shape[1] != n_atoms:
        raise ValueError(f"{what} have {arr.shape[1]} atoms but the model has {n_atoms}")
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        raise ValueError(
            f"{what} contain NaN or inf in {int(bad.sum())} of {len(arr)} frames (first: frame {int(np.argmax(bad))})"
        )
    if graph is not None and graph.bonds and len(arr):
        i, j = np.array(graph.bonds).T
        median = float(np.median(np.linalg.norm(arr[: min(len(arr), 64), i] - arr[: min(len(arr), 64), j], axis=-1)))
        # a unit check only: Angstrom gives 1-1.5, nm divided by 10 twice 0.01-0.015; soft bonds at high
        # temperature (the analytic test chain at 400 K: sigma_r = 0.058 nm) legitimately reach 0.05
        if not 0.02 < median < 0.5:
            hint = " They look like Angstrom: divide by 10." if 0.5 <= median < 5 else ""
            raise ValueError(
                f"the median bond length of the {what} is {median:.3g}, not a length in nm (expected about 0.1-0.15)."
                + hint
            )
    return arr


def _count(value, name, lowest):
    """``value`` as an int; ``ValueError`` naming ``name`` unless it is a whole number >= ``lowest``."""
    try:
        ok = not isinstance(value, bool) and float(value) == int(value) and int(value) >= lowest
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {lowest}" + (" (a positive integer)" if lowest == 1 else "") + f"; got {value!r}")
    return int(value)


class ArBG:
    """Autoregressive Boltzmann generator of one molecule's shapes.

    Build one with :meth:`from_data` (bins fitted to training frames, new or shared network),
    :meth:`load` (a file written by :meth:`save` or the trainer) or :meth:`from_pretrained`
    (a model shipped with the package).

    Parameters
    ----------
    topology : openmm.app.Topology, mdtraj.Topology or MolecularGraph
        The molecule (bonds are required; one connected molecule, no solvent).
    representation : str, dict or representation object
        ``"internal"`` or ``"cartesian"``, a stored ``to_dict()``, or a built representation.
    discretizer : Discretizer
        Bins of every model coordinate.
    stereo : StereoChecker
        The stereocentres and their reference handedness.
    network : CausalTransformer
        May be shared with other ``ArBG`` objects.
    anchors : (int, int, int), optional
    metadata : dict, optional
        Provenance stored with the model.
    feature_scheme : {"basic", "peptide"}
        What the network is told about each coordinate (:mod:`openmm_arbg.molecule.features`):
        ``"peptide"`` for a transferable model's network (atom and residue names, the sequence).
    """

    def __init__(self, topology, representation, discretizer, stereo, network, anchors=None, metadata=None,
                 feature_scheme="basic"):
        self.graph = MolecularGraph.from_topology(topology)
        self.representation = build_representation(representation, self.graph, anchors)
        if discretizer.kinds != list(self.representation.coordinate_kinds):
            raise ValueError("the bins do not match the representation's coordinates")
        self.discretizer = discretizer
        self.stereo = stereo
        self.feature_scheme = feature_scheme
        self.features, self.context = features_for(feature_scheme, self.graph, self.representation)
        self.density = AutoregressiveDensity(network, discretizer, self.features, self.context)
        self.density.to(network.head.weight.device)
        self.metadata = dict(metadata or {})
        self.checkpoint_path = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_data(
        cls,
        topology,
        training_positions,
        representation="internal",
        anchors=None,
        n_bins=256,
        margin=0.1,
        network=None,
        reference_positions=None,
        seed=0,
        first_torsions=None,
        branch_torsions="sibling",
    ):
        """A model whose bins are fitted to training frames, with a new or a shared network.

        Parameters
        ----------
        topology : openmm.app.Topology or mdtraj.Topology
        training_positions : array_like (n, N, 3) nm, Quantity or mdtraj.Trajectory
            Configurations from which the bin ranges are fitted (typically the training MD).
        representation : {"internal", "cartesian"}
            Z-matrix internal coordinates (default; practical on CPU) or Cartesian coordinates
            in the anchor frame (the ArBG paper's choice).
        anchors : (int, int, int), optional
            Anchor atoms ``(a, b, c)``, ``b`` and ``c`` bonded to ``a``; near the centre by default.
        n_bins : int
            Bins per coordinate (a shared network fixes it: bins + 2 = its ``vocab_size``).
        margin : float
            Fraction of each coordinate's data range added on both sides of its binned range.
        network : dict, NetworkConfig or CausalTransformer, optional
            Settings of a new network (``n_layer``, ``n_head``, ``d_model``, ``d_hidden``,
            ``dropout``, ``position_encoding``, ``max_positions``), or an existing network to share.
        reference_positions : array_like (N, 3) nm, optional
            Whose stereochemistry is the target's; default the first training frame.
        seed : int
            Seed of a new network's initial weights.
        first_torsions : sequence of str or (i, j, k, l), optional
            Dihedrals that become the first torsion coordinates, in this order (``"phi2"``,
            ``"psi2"``, ``"phi"``, ``"4,6,8,10"`` or atom quadruples): what
            :func:`~openmm_arbg.sampling.control.dihedral_profile` and ``arbg profile`` need.
        branch_torsions : {"sibling", "parent"}
            Torsions of a branch atom's later substituents (:class:`ModelConfig`).
        """
        graph = MolecularGraph.from_topology(topology)
        if isinstance(representation, str):  # the same checks as ModelConfig (names, bins, margin)
            ModelConfig(representation=representation, n_bins=n_bins, margin=margin, seed=seed, branch_torsions=branch_torsions)
        if first_torsions:
            from .molecule.topology import dihedral_indices

            first_torsions = dihedral_indices(graph, list(first_torsions)).tolist()
        if isinstance(network, CausalTransformer) and int(n_bins) + 2 != network.cfg.vocab_size:
            raise ValueError(f"n_bins={n_bins} but the shared network reads {network.cfg.vocab_size - 2} bins per coordinate")
        x = as_positions_nm(training_positions, graph.n_atoms, graph, "training positions")
        if len(x) == 0:
            raise ValueError("the training positions hold no frames; bins are fitted to at least one frame")
        ref = x[0] if reference_positions is None else as_positions_nm(reference_positions, graph.n_atoms, graph)[0]
        stereo = StereoChecker(graph).record(ref)
        wrong = ~stereo.check(x)
        if wrong.any():
            raise ValueError(
                f"{int(wrong.sum())} of {len(x)} training frames (first: frame {int(np.argmax(wrong))}) have a stereocentre "
                "of the other handedness than the reference: the frames mix stereoisomers or list atoms in another order"
            )
        # the handedness of each stereocentre is built into the coordinates (internal representation)
        # a shared network from before the relative-torsion scheme reads no half-torsion features; it also
        # learned the old Z-matrix's branch torsions, so it keeps those
        stereo_ok = not isinstance(network, CausalTransformer) or network.cfg.feature_sizes[1] >= FEATURE_SIZES[1]
        rep = build_representation(
            representation, graph, anchors, reference_positions=ref if stereo_ok else None, first_torsions=first_torsions,
            branches=branches_of(branch_torsions) if stereo_ok else None,
        )
        z, _ = rep.to_model_coordinates(torch.as_tensor(x))
        discretizer = Discretizer.fit(z.numpy(), rep.coordinate_kinds, n_bins, margin)
        if not isinstance(network, CausalTransformer):
            cfg = network if isinstance(network, NetworkConfig) else NetworkConfig.from_dict(dict(network or {}))
            cfg = NetworkConfig.from_dict(
                dict(
                    cfg.to_dict(),
                    vocab_size=discretizer.vocab_size,
                    max_positions=cfg.max_positions or rep.n_coords,
                    feature_sizes=cfg.feature_sizes or FEATURE_SIZES,
                )
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = CausalTransformer(cfg)
        return cls(graph, rep, discretizer, stereo, network, rep.anchors)

    @classmethod
    def load(cls, path, topology=None, device="cpu"):
        """Load a model written by :meth:`save` (or a trainer's ``model.safetensors``).

        Parameters
        ----------
        path : str
        topology : openmm.app.Topology or mdtraj.Topology, optional
            If given, must be the model's molecule (same atoms in the same order and bonds).
        device : str or torch.device
        """
        config, tensors = read_checkpoint(path)
        model = cls.from_checkpoint(config, tensors, path)
        if topology is not None:
            check_same_molecule(model.graph, MolecularGraph.from_topology(topology), what=f"{path} was trained on another molecule: the topology given")
        model.checkpoint_path = os.path.abspath(path)
        return model.to(device)

    @classmethod
    def from_checkpoint(cls, config, tensors, path="checkpoint"):
        """Rebuild a model from :func:`~openmm_arbg.model.checkpoint.read_checkpoint`'s output."""
        if "transferable" in config:
            raise ValueError(f"{path} is a transferable model of many peptides: load it with "
                             "openmm_arbg.transferable.TransferableArBG.load(path).for_sequence(...), or give the "
                             "commands --system peptide:SEQUENCE with it")
        mol = config["molecule"]
        try:
            graph = MolecularGraph.from_dict(mol["graph"])
            if graph.fingerprint() != mol["fingerprint"]:
                raise ValueError("the stored topology does not match its fingerprint")
            network = CausalTransformer(NetworkConfig.from_dict(config["network"]))
            model = cls(
                graph,
                mol["representation"],
                Discretizer.from_state_dict(mol["discretizer"]),
                StereoChecker.from_dict(graph, mol["stereo_signs"]),
                network,
                mol["representation"].get("anchors"),
                config.get("metadata", {}),
                mol.get("features", "basic"),
            )
            model.load_network_weights(tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: the checkpoint's configuration or weights are corrupt ({exc})") from None
        bad = [k for k, v in model.density.network.state_dict().items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"{path}: the network weights contain NaN or inf ({', '.join(bad[:3])}); the model is unusable")
        return model.eval()

    @classmethod
    def from_pretrained(cls, name, device="cpu"):
        """A model shipped with the package, by name (see :func:`openmm_arbg.pretrained.list_pretrained`)."""
        from .pretrained import pretrained_path

        return cls.load(pretrained_path(name), device=device)

    # ------------------------------------------------------------------ description
    @property
    def network(self):
        """The :class:`~openmm_arbg.model.network.CausalTransformer` (possibly shared)."""
        return self.density.network

    @property
    def n_atoms(self):
        return self.graph.n_atoms

    @property
    def n_coords(self):
        """Number of model coordinates, 3N - 6."""
        return self.representation.n_coords

    @property
    def topology(self):
        """The molecule as an ``mdtraj.Topology``."""
        return self.graph.to_mdtraj()

    @property
    def device(self):
        return self.density.device

    def dihedral_coordinate(self, dihedral):
        """Index of the model coordinate that is a dihedral (rad, periodic).

        Parameters
        ----------
        dihedral : str or (int, int, int, int)
            ``"phiK"``/``"psiK"`` (residue K, from 1), ``"phi"``/``"psi"``, ``"i,j,k,l"`` or four
            atom indices.

        Raises
        ------
        ValueError
            If the dihedral is not one of the model's coordinates, saying how to train one with it.
        """
        from .molecule.topology import dihedral_indices

        quad = [int(a) for a in dihedral_indices(self.graph, [dihedral])[0]]
        find = getattr(self.representation, "torsion_coordinate", None)
        index = find(quad) if find is not None else None
        if index is None:
            label = dihedral if isinstance(dihedral, str) else ",".join(map(str, quad))
            raise ValueError(
                f"dihedral {label} (atoms {quad}) is not a coordinate of this {self.representation.kind} model: train one "
                f"with it first in the order (arbg train --first-torsions {label} ...; "
                f"ArBG.from_data(..., first_torsions=[{label!r}]))"
            )
        return index

    def fingerprint(self):
        """SHA-256 of the molecule's atoms, residues and bonds."""
        return self.graph.fingerprint()

    def n_parameters(self):
        return self.network.n_parameters()

    def __repr__(self):
        return (
            f"ArBG({self.representation.kind}, {self.n_atoms} atoms, {self.n_coords} coordinates, "
            f"{self.discretizer.n_bins} bins, {self.n_parameters():,} parameters, device={self.device})"
        )

    def to(self, device):
        """Move the network to ``device`` (e.g. ``"cuda"``); returns self."""
        self.density.to(device)
        return self

    def parameters(self):
        return self.network.parameters()

    def train(self, mode=True):
        """Set the network's training mode (dropout). Densities are always evaluated without it."""
        self.density.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------ coordinates
    def to_model_coordinates(self, positions):
        """Positions -> model coordinates ``z`` (n, 3N-6) float64 tensor and ``log_volume`` (n,)."""
        x = torch.as_tensor(as_positions_nm(positions, self.n_atoms, self.graph))
        return self.representation.to_model_coordinates(x)

    def from_model_coordinates(self, z):
        """Model coordinates (n, 3N-6) -> positions (n, N, 3) nm in the canonical frame (numpy)."""
        x, _ = self.representation.from_model_coordinates(torch.as_tensor(np.asarray(z, dtype=np.float64)))
        return x.numpy()

    def check_topology(self, topology):
        """Raise ``ValueError`` if ``topology`` is not the model's molecule (same atoms in order)."""
        check_same_molecule(self.graph, MolecularGraph.from_topology(topology), what="topology")

    def check_stereo(self, positions):
        """Boolean mask (n,): True where every stereocentre has the reference's handedness."""
        return self.stereo.check(as_positions_nm(positions, self.n_atoms, self.graph))

    def in_support(self, positions, batch_size=65536):
        """Boolean mask (n,): True where ``log_prob(positions)`` is finite, found without the
        network (only the coordinates and the bins decide the support: a stereocentre of the other
        handedness or a coordinate beyond its bound is outside), so it costs a small fraction of
        :meth:`log_prob` on many frames."""
        x = torch.as_tensor(as_positions_nm(positions, self.n_atoms, self.graph))
        batch_size = _count(batch_size, "batch_size", 1)
        out = []
        for s in range(0, len(x), batch_size):
            z, log_volume = self.representation.to_model_coordinates(x[s : s + batch_size])
            _, log_within = self.discretizer.tokenize(z.double())  # wraps torsions itself
            out.append(torch.isfinite(log_within.sum(1) - log_volume))
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=bool)

    def place(self, positions, like):
        """Move shapes into the rigid-body frame of other configurations.

        Parameters
        ----------
        positions : array_like (n, N, 3) nm
            Shapes to place (e.g. from :meth:`sample`, which returns the canonical frame).
        like : array_like (n, N, 3) or (N, 3) nm
            Configurations whose anchor position and orientation the result takes.

        Returns
        -------
        numpy.ndarray (n, N, 3) nm
        """
        x = torch.as_tensor(as_positions_nm(positions, self.n_atoms))
        ref = torch.as_tensor(as_positions_nm(like, self.n_atoms))
        local = to_local_frame(x, self.representation.anchors)
        origin, rotation = canonical_frame(ref, self.representation.anchors)
        if len(origin) == 1 and len(local) > 1:
            origin, rotation = origin.expand(len(local), 3), rotation.expand(len(local), 3, 3)
        return place_in_frame(local, origin, rotation).numpy()

    # ------------------------------------------------------------------ density
    def log_prob(self, positions, proposal_temperature=1.0, start=0, batch_size=4096):
        """Log density of configurations under the model, in nats.

        Parameters
        ----------
        positions : array_like (n, N, 3) or (N, 3) nm, Quantity or mdtraj.Trajectory
        proposal_temperature : float
            Softmax temperature of the proposal whose density is wanted.
        start : int
            ``0``: the joint density. ``k > 0``: the conditional density of the model coordinates
            from ``k`` on given those before, ``log q(z_>=k | z_<k) - log|J(z)|``, so that
            ``log_prob(x) = log_prob_prefix(x, k) + log_prob(x, start=k)`` and a move that
            resamples the coordinates after ``k`` is accepted with the same formula as a
            whole-molecule move.
        batch_size : int

        Returns
        -------
        numpy.ndarray (n,), float64
            ``-u(x) - log q(x)`` is the log importance weight up to a constant; ``-inf`` outside
            the model's support.
        """
        x = torch.as_tensor(as_positions_nm(positions, self.n_atoms, self.graph))
        batch_size = _count(batch_size, "batch_size", 1)
        if isinstance(start, bool) or int(start) != start or not 0 <= start <= self.n_coords:
            raise ValueError(f"start must be a model-coordinate cut in [0, {self.n_coords}]; got {start!r}")
        out = []
        for s in range(0, len(x), batch_size):
            z, log_volume = self.representation.to_model_coordinates(x[s : s + batch_size])
            out.append(self.density.log_prob(z, proposal_temperature, start=start).cpu() - log_volume)
        return torch.cat(out).numpy() if out else np.zeros(0)

    def log_prob_prefix(self, positions, stop, proposal_temperature=1.0):
        """``log q(z_<stop)``: the density of the first ``stop`` model coordinates (no Jacobian)."""
        z, _ = self.to_model_coordinates(positions)
        return self.density.log_prob(z, proposal_temperature, stop=stop).cpu().numpy()

    def sample(self, n, proposal_temperature=1.0, batch_size=1024, seed=None, prefix=None, progress=False):
        """Draw ``n`` configurations, or continuations of fixed leading model coordinates.

        Parameters
        ----------
        n : int
        proposal_temperature : float
            Softmax temperature (> 1 broadens, < 1 sharpens); ``log_q`` is that of the tempered
            model, so weights and acceptances stay exact.
        batch_size : int
        seed : int, optional
            For reproducible draws.
        prefix : array_like (k,) or (n, k), optional
            Leading model coordinates (see :meth:`to_model_coordinates`) to keep.
        progress : bool
            Show progress per batch (a bar on a terminal, plain lines in logs).

        Returns
        -------
        positions : numpy.ndarray (n, N, 3) float64, nm
            In the canonical frame (anchor ``a`` at the origin); see :meth:`place`.
        log_q : numpy.ndarray (n,) float64
            Without a prefix, ``log_prob`` of each configuration; with a prefix of length ``k``,
            ``log_prob(x, start=k)``.
        """
        n = _count(n, "n", 0)
        batch_size = _count(batch_size, "batch_size", 1)
        if prefix is not None:
            prefix = torch.as_tensor(np.asarray(prefix, dtype=np.float64))
            if prefix.ndim == 2 and prefix.shape[0] != n:
                raise ValueError(f"prefix has {prefix.shape[0]} rows; give one prefix or {n}")
            if prefix.ndim not in (1, 2) or prefix.shape[-1] > self.n_coords:
                raise ValueError(f"prefix must have shape (k,) or ({n}, k) with k <= {self.n_coords} (the model coordinates); "
                                 f"got {tuple(prefix.shape)}")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        from .utils import progress_bar

        xs, lqs = [], []
        for s in progress_bar(range(0, n, batch_size), desc="sample", unit="batch", disable=not progress):
            m = min(batch_size, n - s)
            p = None if prefix is None else (prefix if prefix.ndim == 1 else prefix[s : s + m])
            z, log_qz = self.density.sample(m, proposal_temperature, generator, prefix=p)
            x, log_volume = self.representation.from_model_coordinates(z.cpu())
            xs.append(x)
            lqs.append(log_qz.cpu() - log_volume)
        if not xs:
            return np.zeros((0, self.n_atoms, 3)), np.zeros(0)
        return torch.cat(xs).numpy(), torch.cat(lqs).numpy()

    # ------------------------------------------------------------------ storage
    def checkpoint_config(self):
        """Everything needed to rebuild the model, as JSON-serialisable Python types."""
        return {
            "molecule": {
                "graph": self.graph.to_dict(),
                "fingerprint": self.fingerprint(),
                "representation": self.representation.to_dict(),
                "discretizer": self.discretizer.state_dict(),
                "stereo_signs": self.stereo.to_dict(),
                **({"features": self.feature_scheme} if self.feature_scheme != "basic" else {}),
            },
            "network": self.network.cfg.to_dict(),
            "metadata": self.metadata,
        }

    def network_tensors(self):
        """The network's weights keyed as in a checkpoint (``network.*``)."""
        return {f"network.{k}": v for k, v in self.network.state_dict().items()}

    def load_network_weights(self, tensors):
        """Load the network's weights from checkpoint tensors (the ``network.*`` keys)."""
        prefix = "network."
        self.network.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})

    def save(self, path):
        """Write the model to one safetensors file (configuration as JSON metadata, weights),
        atomically. Refuses a network with NaN or inf weights."""
        tensors = self.network_tensors()
        bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"refusing to save a model whose weights contain NaN or inf ({', '.join(bad[:3])})")
        return write_checkpoint(path, self.checkpoint_config(), tensors)
