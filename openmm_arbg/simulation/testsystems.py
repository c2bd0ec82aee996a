"""Small systems with exactly known Boltzmann distributions, for exactness tests of samplers.

:func:`harmonic_chain` builds an unconstrained chain of 4-5 "carbon" atoms with harmonic bonds,
harmonic angles and periodic torsions and no non-bonded terms. Its Boltzmann distribution over
shapes factorises in internal coordinates: every bond length r has density proportional to
``r^2 exp(-beta k_r (r - r0)^2 / 2)``, every angle ``sin(theta) exp(-beta k_theta (theta - theta0)^2 / 2)``
and every torsion ``exp(-beta V(phi))``; :class:`ChainAnalytic` integrates these by quadrature.
"""

import math
from dataclasses import dataclass

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from scipy import integrate

from ..physics import kT_kJ_per_mol
from .systems import MolecularSystem

__all__ = ["harmonic_chain", "ChainAnalytic"]


@dataclass
class ChainAnalytic:
    """Exact marginals of :func:`harmonic_chain` (units: nm, rad, kJ/mol)."""

    n_atoms: int
    r0: float
    k_bond: float
    theta0: float
    k_angle: float
    k_torsion: float
    periodicity: int
    phase: float

    def _densities(self, temperature_K):
        beta = 1.0 / kT_kJ_per_mol(temperature_K)
        bond = lambda r: r**2 * np.exp(-beta * self.k_bond * (r - self.r0) ** 2 / 2)  # noqa: E731
        angle = lambda t: np.sin(t) * np.exp(-beta * self.k_angle * (t - self.theta0) ** 2 / 2)  # noqa: E731
        torsion = lambda p: np.exp(-beta * self.k_torsion * (1 + np.cos(self.periodicity * p - self.phase)))  # noqa: E731
        width = 12 * math.sqrt(1.0 / (beta * self.k_bond))
        return {
            "bond": (bond, max(1e-9, self.r0 - width), self.r0 + width),
            "angle": (angle, 0.0, math.pi),
            "torsion": (torsion, -math.pi, math.pi),
        }

    def expectation(self, kind, f, temperature_K=300.0):
        """Exact mean of ``f`` of one bond length, angle or torsion (``kind``)."""
        p, a, b = self._densities(temperature_K)[kind]
        z = integrate.quad(p, a, b, limit=200, epsabs=0, epsrel=1e-11)[0]
        return integrate.quad(lambda x: f(x) * p(x), a, b, limit=200, epsabs=0, epsrel=1e-11)[0] / z

    def probability(self, kind, lo, hi, temperature_K=300.0):
        """Exact probability that one coordinate of ``kind`` lies in [lo, hi)."""
        p, a, b = self._densities(temperature_K)[kind]
        z = integrate.quad(p, a, b, limit=200, epsabs=0, epsrel=1e-11)[0]
        lo, hi = max(lo, a), min(hi, b)
        return integrate.quad(p, lo, hi, limit=200, epsabs=0, epsrel=1e-11)[0] / z if hi > lo else 0.0

    def log_partition_function(self, temperature_K=300.0):
        """``log Z`` of the shape distribution, ``Z = int exp(-u) dV_shape`` with
        ``d^{3N}x = d^3t dR dV_shape`` and ``dR`` the Haar measure of total mass ``8 pi^2``: the
        quantity importance sampling with an ArBG estimates."""
        counts = {"bond": self.n_atoms - 1, "angle": self.n_atoms - 2, "torsion": self.n_atoms - 3}
        total = 0.0
        for kind, (p, a, b) in self._densities(temperature_K).items():
            total += counts[kind] * math.log(integrate.quad(p, a, b, limit=200, epsabs=0, epsrel=1e-11)[0])
        return total


def harmonic_chain(
    n_atoms=4,
    r0=0.15,
    k_bond=1000.0,
    theta0=1.9,
    k_angle=8.0,
    k_torsion=2.5,
    periodicity=3,
    phase=0.0,
    temperature=300.0,
):
    """A chain of ``n_atoms`` (4 or 5) carbons with bonds, angles and torsions only.

    Parameters
    ----------
    r0 : float, nm
    k_bond : float, kJ/mol/nm^2
    theta0 : float, rad
    k_angle : float, kJ/mol/rad^2
    k_torsion : float, kJ/mol; ``V(phi) = k_torsion (1 + cos(periodicity phi - phase))``
    temperature : float, K

    Returns
    -------
    (MolecularSystem, ChainAnalytic)
    """
    if n_atoms < 4:
        raise ValueError("the chain needs at least 4 atoms to have a torsion")
    system = openmm.System()
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("MOL", chain)
    atoms = []
    for i in range(n_atoms):
        system.addParticle(12.0)
        atoms.append(top.addAtom(f"C{i + 1}", app.Element.getBySymbol("C"), res))
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    torsions = openmm.PeriodicTorsionForce()
    for i in range(n_atoms - 1):
        bonds.addBond(i, i + 1, r0, k_bond)
        top.addBond(atoms[i], atoms[i + 1])
    for i in range(n_atoms - 2):
        angles.addAngle(i, i + 1, i + 2, theta0, k_angle)
    for i in range(n_atoms - 3):
        torsions.addTorsion(i, i + 1, i + 2, i + 3, periodicity, phase, k_torsion)
    for f in (bonds, angles, torsions):
        system.addForce(f)
    # a zig-zag starting structure at the bond length and angle minima
    pos = [np.zeros(3)]
    direction = np.array([1.0, 0.0, 0.0])
    for i in range(1, n_atoms):
        turn = (math.pi - theta0) * (1 if i % 2 else -1)
        c, s = math.cos(turn), math.sin(turn)
        direction = np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1], 0.0])
        pos.append(pos[-1] + r0 * direction)
    pos = np.array(pos)
    pos[3:, 2] += 0.02  # off-plane, so that no torsion sits at the 180 degree barrier top of n=3 with phase 0
    ms = MolecularSystem(f"harmonic_chain_{n_atoms}", system, top, pos * unit.nanometer, temperature * unit.kelvin)
    return ms, ChainAnalytic(n_atoms, r0, k_bond, theta0, k_angle, k_torsion, periodicity, phase)
