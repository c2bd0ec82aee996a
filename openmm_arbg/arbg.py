"""``ArBG``: an autoregressive Boltzmann generator for one molecule.

Contract (DESIGN section 3): ``log_prob(x)`` is the log density of the model's proposal over
configurations modulo rigid-body motion, in the measure in which ``exp(-u(x))`` is the Boltzmann
density, so ``-u(x) - log_prob(x)`` is the exact log importance weight up to one constant, and
``log_prob`` of what :meth:`ArBG.sample` returned equals the ``log_q`` it reported.
"""

import hashlib
import json
import os
import tempfile

import numpy as np
import torch

from .density import AutoregressiveDensity
from .discretizer import Discretizer
from .representation import StereoChecker, build_representation, canonical_frame, place_in_frame, to_local_frame
from .topology import MolecularGraph

__all__ = ["ArBG", "file_sha256", "as_positions_nm"]

CHECKPOINT_FORMAT = "openmm-arbg-checkpoint"
CHECKPOINT_VERSION = 1
ELEMENTS = ["H", "C", "N", "O", "S", "P", "F", "Cl", "Br", "I"]  # anything else: the last index + 1
KINDS = ["unbounded", "positive", "angle", "periodic"]
DEFAULT_NETWORK = dict(n_layer=4, n_head=4, d_model=128, dropout=0.0)


def file_sha256(path):
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_positions_nm(positions, n_atoms=None, graph=None, what="positions"):
    """Positions as a float64 array (n, N, 3) in nm.

    Accepts an ``mdtraj.Trajectory`` (its topology is checked against ``graph``), an OpenMM
    ``Quantity`` (any length unit), a list of ``Vec3``, or an array (N, 3) or (n, N, 3) in nm.
    Raises ``ValueError`` with what is wrong for a wrong atom count or order, or NaN/inf values.
    """
    import mdtraj
    import openmm.unit as unit

    if isinstance(positions, mdtraj.Trajectory):
        if graph is not None:
            other = MolecularGraph.from_topology(positions.topology)
            if other.fingerprint() != graph.fingerprint():
                raise ValueError(
                    f"the trajectory's topology does not match the model's: {_topology_difference(graph, other)}"
                )
        positions = positions.xyz
    elif unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    arr = np.asarray(positions, dtype=np.float64)
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
    return arr


def _topology_difference(expected, other):
    if other.n_atoms != expected.n_atoms:
        return f"{other.n_atoms} atoms instead of {expected.n_atoms}"
    for i, (a, b) in enumerate(zip(expected.atoms, other.atoms)):
        if (a["name"], a["element"], a["resname"]) != (b["name"], b["element"], b["resname"]):
            return f"atom {i} is {b['resname']}:{b['name']} ({b['element']}), expected {a['resname']}:{a['name']} ({a['element']})"
    return "the bonds differ"


class ArBG:
    """Autoregressive Boltzmann generator of one molecule's shapes.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        The molecule (bonds are required; one connected molecule, no solvent).
    training_positions : array_like (n, N, 3) nm, Quantity or mdtraj.Trajectory
        Configurations from which the bin ranges are fitted (typically the training MD).
    representation : {"internal", "cartesian"}
        Model coordinates: Z-matrix internal coordinates (default; practical on CPU) or Cartesian
        coordinates in the anchor frame (the ArBG paper's choice).
    anchors : (int, int, int), optional
        Anchor atoms ``(a, b, c)``, ``b`` and ``c`` bonded to ``a``; chosen near the molecule's
        centre by default.
    n_bins : int
        Bins per coordinate.
    margin : float
        Fraction of each coordinate's data range added on both sides of its binned range.
    network : dict, optional
        Transformer size: ``n_layer``, ``n_head``, ``d_model``, ``d_hidden``, ``dropout``.
    reference_positions : array_like (N, 3) nm, optional
        Whose stereochemistry is the target's; default the first training frame.
    seed : int
        Seed of the network's initial weights.
    """

    def __init__(
        self,
        topology,
        training_positions,
        representation="internal",
        anchors=None,
        n_bins=256,
        margin=0.1,
        network=None,
        reference_positions=None,
        seed=0,
        _state=None,
    ):
        self.graph = MolecularGraph.from_topology(topology)
        self.representation = build_representation(representation, self.graph, anchors)
        if _state is not None:  # rebuilding from a checkpoint
            self.discretizer = Discretizer.from_state_dict(_state["discretizer"])
            self.stereo = StereoChecker(self.graph, _state["stereo_signs"])
            net_cfg = _state["network"]
            self.metadata = dict(_state.get("metadata", {}))
        else:
            x = as_positions_nm(training_positions, self.graph.n_atoms, self.graph, "training positions")
            z, _ = self.representation.to_model_coordinates(torch.as_tensor(x))
            self.discretizer = Discretizer.fit(z.numpy(), self.representation.coordinate_kinds, n_bins, margin)
            ref = x[0] if reference_positions is None else as_positions_nm(reference_positions, self.graph.n_atoms)[0]
            self.stereo = StereoChecker(self.graph).record(ref)
            net_cfg = dict(DEFAULT_NETWORK, **(network or {}))
            self.metadata = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.density = AutoregressiveDensity(self.discretizer, net_cfg, self._position_features())
        self.density.to(torch.float32)

    # ------------------------------------------------------------------ description
    def _position_features(self):
        rep = self.representation
        elements = [self.graph.elements[i] for i in rep.coordinate_atoms]
        element_ids = [ELEMENTS.index(e) if e in ELEMENTS else len(ELEMENTS) for e in elements]
        roles = [KINDS.index(k) * 3 + r for k, r in zip(rep.coordinate_kinds, rep.coordinate_roles)]
        feats = torch.tensor([element_ids, roles], dtype=torch.long).T
        return feats

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

    def fingerprint(self):
        """SHA-256 of the molecule's atoms, residues and bonds."""
        return self.graph.fingerprint()

    def n_parameters(self):
        return self.density.network.n_parameters()

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
        return self.density.parameters()

    def train(self, mode=True):
        self.density.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------ coordinates
    def to_model_coordinates(self, positions):
        """Positions -> model coordinates ``z`` (n, 3N-6) float64 tensor and ``log_volume`` (n,)."""
        x = torch.as_tensor(as_positions_nm(positions, self.n_atoms, self.graph))
        return self.representation.to_model_coordinates(x)

    def check_topology(self, topology):
        """Raise ``ValueError`` if ``topology`` is not the model's molecule (same atoms in order)."""
        other = MolecularGraph.from_topology(topology)
        if other.fingerprint() != self.fingerprint():
            raise ValueError(f"topology does not match the model's molecule: {_topology_difference(self.graph, other)}")

    def check_stereo(self, positions):
        """Boolean mask (n,): True where every tetrahedral centre has the reference's handedness."""
        return self.stereo.check(as_positions_nm(positions, self.n_atoms, self.graph))

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
    def log_prob(self, positions, temperature=1.0, batch_size=4096):
        """Log density of configurations under the model, in nats.

        Parameters
        ----------
        positions : array_like (n, N, 3) or (N, 3) nm, Quantity or mdtraj.Trajectory
        temperature : float
            Softmax temperature of the proposal whose density is wanted.
        batch_size : int

        Returns
        -------
        numpy.ndarray (n,), float64
            ``log q(x)`` in the measure of DESIGN section 3: ``-u(x) - log q(x)`` is the log
            importance weight up to a constant. ``-inf`` outside the model's support.
        """
        x = torch.as_tensor(as_positions_nm(positions, self.n_atoms, self.graph))
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                z, log_volume = self.representation.to_model_coordinates(x[start : start + batch_size])
                out.append(self.density.log_prob(z, temperature).cpu() - log_volume)
        return torch.cat(out).numpy()

    def sample(self, n, temperature=1.0, batch_size=1024, seed=None):
        """Draw ``n`` configurations.

        Parameters
        ----------
        n : int
        temperature : float
            Softmax temperature (tau > 1 broadens, < 1 sharpens); ``log_q`` is that of the
            tempered model, so weights and acceptances stay exact.
        batch_size : int
        seed : int, optional
            For reproducible draws.

        Returns
        -------
        positions : numpy.ndarray (n, N, 3) float64, nm
            In the canonical frame (anchor ``a`` at the origin); see :meth:`place`.
        log_q : numpy.ndarray (n,) float64
            ``log_prob`` of each returned configuration at this temperature.
        """
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        xs, lqs = [], []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z, log_qz = self.density.sample(m, temperature, generator)
            x, log_volume = self.representation.from_model_coordinates(z.cpu())
            xs.append(x)
            lqs.append(log_qz.cpu() - log_volume)
        if not xs:
            return np.zeros((0, self.n_atoms, 3)), np.zeros(0)
        return torch.cat(xs).numpy(), torch.cat(lqs).numpy()

    # ------------------------------------------------------------------ storage
    def config(self):
        """Everything needed to rebuild the model, as JSON-serialisable Python types."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "graph": self.graph.to_dict(),
            "fingerprint": self.fingerprint(),
            "representation": self.representation.to_dict(),
            "discretizer": self.discretizer.state_dict(),
            "stereo_signs": [int(s) for s in self.stereo.reference_signs],
            "network": {k: v for k, v in self.density.config.to_dict().items()},
            "metadata": self.metadata,
        }

    def save(self, path, extra_tensors=None):
        """Write one safetensors file with the config (JSON metadata) and the weights.

        Written atomically (temporary file, then rename).
        """
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.density.network.state_dict().items()}
        for k, v in (extra_tensors or {}).items():
            tensors[k] = v.detach().cpu().contiguous()
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"openmm_arbg": json.dumps(self.config())})
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def load_network_weights(self, tensors):
        """Load the network's weights from checkpoint tensors (the ``model.*`` keys of
        :meth:`read_checkpoint`)."""
        prefix = "model."
        self.density.network.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})

    @staticmethod
    def read_checkpoint(path):
        """Read a checkpoint: (config dict, tensors dict). Never unpickles."""
        from safetensors import safe_open

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise ValueError(
                f"{path} is not a readable openmm-arbg checkpoint (safetensors could not parse it: {exc}). "
                "The file may be truncated or of another format; re-save the model with ArBG.save."
            ) from None
        if "openmm_arbg" not in meta:
            raise ValueError(f"{path} is a safetensors file but not an openmm-arbg checkpoint (no 'openmm_arbg' metadata)")
        try:
            config = json.loads(meta["openmm_arbg"])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: the checkpoint's metadata is corrupt ({exc})") from None
        if config.get("format") != CHECKPOINT_FORMAT or int(config.get("version", -1)) > CHECKPOINT_VERSION:
            raise ValueError(
                f"{path}: checkpoint format {config.get('format')!r} version {config.get('version')!r} is not "
                f"supported by this openmm-arbg (reads {CHECKPOINT_FORMAT!r} up to version {CHECKPOINT_VERSION})"
            )
        return config, tensors

    @classmethod
    def load(cls, path, topology=None, device="cpu"):
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        path : str
        topology : openmm.app.Topology or mdtraj.Topology, optional
            If given, must be the model's molecule (same atoms in the same order and bonds).
        device : str or torch.device
        """
        config, tensors = cls.read_checkpoint(path)
        graph = MolecularGraph.from_dict(config["graph"])
        if graph.fingerprint() != config["fingerprint"]:
            raise ValueError(f"{path}: the stored topology does not match its fingerprint; the file is corrupt")
        model = cls(
            graph,
            None,
            representation=config["representation"]["kind"],
            anchors=config["representation"]["anchors"],
            _state=config,
        )
        try:
            model.load_network_weights(tensors)
        except RuntimeError as exc:
            raise ValueError(f"{path}: the weights do not fit the stored configuration ({exc})") from None
        if topology is not None:
            try:
                model.check_topology(topology)
            except ValueError as exc:
                raise ValueError(f"{path} was trained on another molecule: {exc}") from None
        model.checkpoint_path = os.path.abspath(path)
        return model.to(device)
