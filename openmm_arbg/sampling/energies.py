"""Reduced potentials of many conformations with OpenMM.

``u(x) = U(x) / (k_B T)`` (dimensionless, in kT) for a single molecule in vacuum or implicit
solvent (no box, so no pV term). A failed or non-finite energy is ``+inf``, never 0: such a
conformation gets importance weight 0 and is always rejected by Metropolis-Hastings.

On CPU the conformations can be spread over worker processes, each with its own Context built
inside the worker from the serialised System; on a GPU use one Context (``n_workers=1``).
"""

import math
import multiprocessing as mp

import numpy as np
import openmm
import openmm.unit as unit

from ..physics import check_platform, check_temperature, default_platform, kT_kJ_per_mol, platform_properties

__all__ = ["ReducedPotential", "kT_kJ_per_mol"]

_WORKER = {}


def _make_context(system, platform_name):
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName(platform_name)
    return openmm.Context(system, integrator, platform, platform_properties(platform_name))


def _energies_kj(context, positions):
    out = np.empty(len(positions))
    for i, x in enumerate(positions):
        try:
            context.setPositions(x)
            e = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        except Exception:  # OpenMM raises on NaN coordinates or a failing custom force
            e = math.inf
        out[i] = e if math.isfinite(e) else math.inf
    return out


def _harmonic_bonds(system):
    """Atom pairs (k, 2) of the System's HarmonicBondForce terms (for a check of length units)."""
    pairs = [force.getBondParameters(b)[:2] for force in system.getForces() if isinstance(force, openmm.HarmonicBondForce)
             for b in range(force.getNumBonds())]
    return np.array(pairs, dtype=int).reshape(-1, 2)


def _check_nm(x, bonds):
    """``ValueError`` if positions (n, N, 3) look like Angstrom: the median bonded distance of the
    first 64 configurations between 0.5 and 5 (bonds are 0.1-0.15 nm)."""
    if len(bonds) and len(x):
        median = float(np.median(np.linalg.norm(x[:64, bonds[:, 0]] - x[:64, bonds[:, 1]], axis=-1)))
        if 0.5 <= median < 5:
            raise ValueError(
                f"the median bond length of the positions is {median:.3g}, not a length in nm (expected about 0.1-0.15). "
                "They look like Angstrom: divide by 10."
            )


def _worker_init(system_xml, platform_name):
    import signal

    import torch  # noqa: F401  (openmm-torch forces need torch loaded first)

    # Ctrl-C reaches the whole process group: the parent decides what stops (a worker that died
    # of KeyboardInterrupt would leave the pool waiting for its result forever)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler forked from the parent: terminate() must end it

    _WORKER["context"] = _make_context(openmm.XmlSerializer.deserialize(system_xml), platform_name)


def _worker_energies(positions):
    return _energies_kj(_WORKER["context"], positions)


class ReducedPotential:
    """Reduced potentials of conformations in one thermodynamic state.

    Parameters
    ----------
    thermodynamic_state : openmmtools.states.ThermodynamicState or openmm.System
        Target state. A bare System needs ``temperature``.
    temperature : float, K, optional
        Only with a bare System.
    platform : str, optional
        OpenMM platform; by default the fastest for this System, measured on the first positions
        (:func:`openmm_arbg.physics.default_platform`).
    n_workers : int
        Worker processes (CPU). ``1`` evaluates in this process with one Context.

    Examples
    --------
    >>> u = ReducedPotential(state, n_workers=2)     # doctest: +SKIP
    >>> u(positions_nm)                               # (n,) in kT, +inf where OpenMM failed
    """

    def __init__(self, thermodynamic_state, temperature=None, platform=None, n_workers=1):
        if isinstance(thermodynamic_state, openmm.System):
            if temperature is None:
                raise ValueError("a bare System needs a temperature (K); or pass an openmmtools ThermodynamicState")
            system, T = thermodynamic_state, float(temperature)
        else:
            system = thermodynamic_state.system
            T = thermodynamic_state.temperature.value_in_unit(unit.kelvin)
            if getattr(thermodynamic_state, "pressure", None) is not None:
                raise ValueError("ReducedPotential supports NVT states of one molecule (no barostat)")
        if system.usesPeriodicBoundaryConditions():
            raise ValueError("ReducedPotential evaluates one molecule without a box; the System is periodic: build it with "
                             "nonbondedMethod=NoCutoff (vacuum or implicit solvent)")
        T = check_temperature(T)
        if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer (processes; 1 evaluates in this process); got {n_workers!r}")
        check_platform(platform)
        self.system = system
        self.temperature = T
        self.beta = 1.0 / kT_kJ_per_mol(T)  # mol/kJ
        self.platform = platform  # None: chosen by a speed test on the first positions
        self.n_workers = int(n_workers)
        self._bonds = _harmonic_bonds(system)
        self._context = None
        self._pool = None
        self.n_evaluations = 0

    def _single_context(self):
        if self._context is None:
            self._context = _make_context(self.system, self.platform)
        return self._context

    def _worker_pool(self):
        if self._pool is None:
            xml = openmm.XmlSerializer.serialize(self.system)
            # fork where the OS has it: workers only run OpenMM, and scripts need no
            # ``if __name__ == "__main__"`` guard; spawn elsewhere
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self._pool = ctx.Pool(self.n_workers, initializer=_worker_init, initargs=(xml, self.platform))
        return self._pool

    def energies(self, positions):
        """Potential energies (n,) in kJ/mol of positions (n, N, 3) nm; +inf where OpenMM failed."""
        x = np.asarray(positions, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.shape[1:] != (self.system.getNumParticles(), 3):
            raise ValueError(f"positions must have shape (n, {self.system.getNumParticles()}, 3); got {x.shape}")
        _check_nm(x, self._bonds)
        self.n_evaluations += len(x)
        if self.platform is None:
            self.platform = default_platform(len(x[0]), self.system, x[0])
        if self.n_workers == 1 or len(x) < 4 * self.n_workers:
            return _energies_kj(self._single_context(), x)
        # a few chunks per worker balance the load of long lists; short ones (a move's attempts)
        # pay one round trip per worker
        chunks = np.array_split(x, (4 if len(x) >= 64 * self.n_workers else 1) * self.n_workers)
        return np.concatenate(self._worker_pool().map(_worker_energies, chunks))

    def __call__(self, positions):
        """Reduced potentials (n,), dimensionless (kT); +inf where the energy is not finite."""
        return self.beta * self.energies(positions)

    def close(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self._context = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):  # contexts and pools do not pickle or deep-copy
        d = dict(self.__dict__)
        d["_context"] = None
        d["_pool"] = None
        return d
