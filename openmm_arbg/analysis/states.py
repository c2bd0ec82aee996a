"""Conformational states defined by the user, and their populations and free energies.

A state is a Python callable ``f(positions) -> bool array`` or an expression over named backbone
dihedrals (degrees) and distances (nm), for example::

    phi2 < 0 and -120 <= psi2 <= 50          # residue 2's phi and psi (1-based residue positions)
    phi3 > 0 or d(4, 17) < 0.35              # d(i, j): distance between atoms i and j (0-based), nm
    abs(chi1_2) > 120                        # residue 2's side chain in its trans rotamer

Names: ``phiK``, ``psiK`` (K = the residue's position in the topology, from 1), ``phi``/``psi``
when the molecule has exactly one, and the side chains' ``chiN_K`` (``chi1_2``: residue 2's chi1,
N-CA-CB-XG, as mdtraj defines chi1 to chi4). Operators: comparisons (chained too), ``and``, ``or``, ``not``,
``+ - * /``, ``abs(...)``, ``d(i, j)``. Expressions are parsed, never ``eval``-ed.
"""

import ast
import operator

import numpy as np

__all__ = ["StateExpression", "state_indicators", "state_populations"]

_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class StateExpression:
    """A state given as an expression (see the module docstring), compiled for one topology.

    Parameters
    ----------
    expression : str
    topology : mdtraj.Topology, openmm.app.Topology or MolecularGraph
    """

    def __init__(self, expression, topology):
        from .observables import _as_mdtraj, named_dihedrals

        self.expression = str(expression)
        top = _as_mdtraj(topology)
        self.n_atoms = top.n_atoms
        self.dihedral_names = named_dihedrals(top, side_chains=True)
        for name in ("phi", "psi"):  # plain phi/psi only where unambiguous
            if sum(k.startswith(name) and k[3:].isdigit() for k in self.dihedral_names) > 1:
                self.dihedral_names.pop(name, None)
        try:
            self.tree = ast.parse(self.expression, mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"state {self.expression!r} is not a valid expression ({exc.msg})") from None
        self.names, self.pairs = set(), set()
        self._collect(self.tree)

    def _fail(self, what):
        known = ", ".join(sorted(self.dihedral_names)) or "none"
        raise ValueError(f"state {self.expression!r}: {what}. Dihedrals of this molecule: {known}; distances as d(i, j)")

    def _collect(self, node):
        if isinstance(node, ast.BoolOp) or isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            for v in node.values if isinstance(node, ast.BoolOp) else (node.left, node.right):
                self._collect(v)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            self._collect(node.operand)
        elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            for v in (node.left, *node.comparators):
                self._collect(v)
        elif isinstance(node, ast.Name):
            if node.id not in self.dihedral_names:
                self._fail(f"unknown name {node.id!r}")
            self.names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            pass
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            if node.func.id == "abs" and len(node.args) == 1:
                self._collect(node.args[0])
            elif node.func.id == "d" and len(node.args) == 2 and all(
                isinstance(a, ast.Constant) and isinstance(a.value, int) and 0 <= a.value < self.n_atoms for a in node.args
            ):
                self.pairs.add((node.args[0].value, node.args[1].value))
            else:
                self._fail(f"only abs(x) and d(i, j) with atom indices in [0, {self.n_atoms}) may be called")
        else:
            self._fail(f"'{ast.unparse(node)}' is not allowed")

    def __call__(self, positions):
        """Boolean mask (n,) of the frames (n, N, 3) nm in the state."""
        from .observables import dihedrals

        x = np.asarray(positions, dtype=float).reshape(-1, self.n_atoms, 3)
        names = sorted(self.names)
        angles = np.degrees(dihedrals(x, [self.dihedral_names[n] for n in names])) if names else np.zeros((len(x), 0))
        values = {n: angles[:, k] for k, n in enumerate(names)}
        values.update({("d", i, j): np.linalg.norm(x[:, i] - x[:, j], axis=-1) for i, j in self.pairs})
        out = self._evaluate(self.tree, values)
        return np.broadcast_to(np.asarray(out, dtype=bool), (len(x),)).copy()

    def _evaluate(self, node, v):
        if isinstance(node, ast.BoolOp):
            parts = [np.asarray(self._evaluate(p, v), dtype=bool) for p in node.values]
            return np.logical_and.reduce(parts) if isinstance(node.op, ast.And) else np.logical_or.reduce(parts)
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._evaluate(node.left, v), self._evaluate(node.right, v))
        if isinstance(node, ast.UnaryOp):
            x = self._evaluate(node.operand, v)
            return np.logical_not(x) if isinstance(node.op, ast.Not) else (-x if isinstance(node.op, ast.USub) else x)
        if isinstance(node, ast.Compare):
            left, result = self._evaluate(node.left, v), True
            for op, right in zip(node.ops, node.comparators):
                right = self._evaluate(right, v)
                result = np.logical_and(result, _COMPARE[type(op)](left, right))
                left = right
            return result
        if isinstance(node, ast.Name):
            return v[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if node.func.id == "abs":
            return np.abs(self._evaluate(node.args[0], v))
        return v[("d", node.args[0].value, node.args[1].value)]


def state_indicators(states, positions, topology):
    """name -> bool array (n,): which frames lie in each state.

    Parameters
    ----------
    states : dict of str -> (str or callable)
        State name -> expression (:class:`StateExpression`) or ``f(positions) -> bool (n,)``.
    positions : array_like (n, N, 3) nm
    topology : mdtraj.Topology, openmm.app.Topology or MolecularGraph
    """
    from ..arbg import as_positions_nm
    from ..molecule.topology import MolecularGraph
    from .observables import _as_mdtraj

    try:
        graph = topology if isinstance(topology, MolecularGraph) else MolecularGraph.from_topology(topology)
    except ValueError:  # not one bonded molecule: no check of units by bond lengths
        graph = None
    n_atoms = graph.n_atoms if graph is not None else _as_mdtraj(topology).n_atoms
    x = as_positions_nm(positions, n_atoms, graph)  # shape, atom count, NaN, nm (not Angstrom)
    masks = {}
    for name, state in states.items():
        f = StateExpression(state, topology) if isinstance(state, str) else state
        masks[name] = np.asarray(f(x), dtype=bool).reshape(-1)
        if len(masks[name]) != len(x):
            raise ValueError(f"state {name!r} returned {len(masks[name])} values for {len(x)} frames")
    return masks


def state_populations(states, positions, topology, log_weights=None, rng=None, run_lengths=None):
    """Populations and free energies of user-defined states.

    Parameters
    ----------
    states : dict of str -> (str or callable)
        State name -> expression (:class:`StateExpression`) or ``f(positions) -> bool (n,)``.
    positions : array_like (n, N, 3) nm
        A chain in time order, or importance-sampling proposals.
    topology : mdtraj.Topology, openmm.app.Topology or MolecularGraph
    log_weights : array_like (n,), optional
        Importance weights; without them ``positions`` are a chain (errors from the statistical
        inefficiency, pymbar); with them, bootstrap errors.
    rng : numpy.random.Generator or int, optional
        Bootstrap of the weighted estimates.
    run_lengths : sequence of int, optional
        For a chain made of independent runs one after another (several MD replicas): their
        lengths, so each run's statistical inefficiency enters the error
        (:func:`~openmm_arbg.analysis.free_energy.chain_mean_error`).

    Returns
    -------
    dict
        name -> dict(population, population_error, free_energy, free_energy_error), free
        energies ``-ln P`` in kT (relative to the whole ensemble; differences between states are
        free-energy differences), ``free_energy_error = dP / P`` (the delta method). A state never
        visited gets ``free_energy = inf`` and ``free_energy_error = nan``; one whose
        ``population_error`` is at least its population gets ``free_energy_error = inf``: P's
        error bar reaches zero, so ``-ln P`` has no upper bound and the delta method means nothing.
        With ``log_weights`` each also holds ``ess``, Kish's effective sample size of the weights:
        with a handful of effective samples the bootstrap error is not an error bar (it can be 0);
        and ``state_ess``, the same of the weights inside the state. A rare state whose population
        rests on a few dozen effective proposals can be off by more than its bootstrap error (Ace-Leu-Nme's
        2 % rotamer: 0.93 +- 0.16 % from an ESS of 48 inside it, against a reference's 1.93 +- 0.24 %).
    """
    from ..sampling.importance import effective_sample_size, weighted_mean
    from .free_energy import populations_from_chain

    masks = state_indicators(states, positions, topology)
    n = len(next(iter(masks.values()))) if masks else len(positions)
    if log_weights is not None and np.shape(log_weights) != (n,):
        raise ValueError(f"log_weights must have one value per frame, shape ({n},); got shape {np.shape(log_weights)}")
    # Kish's ESS of the weights: below about 20 the bootstrap error means little
    ess = None if log_weights is None else effective_sample_size(log_weights)
    if run_lengths is not None and log_weights is not None:
        raise ValueError("run_lengths belong to a chain; importance-weighted samples have none")
    out = {}
    for name, mask in masks.items():
        if log_weights is None:
            p, dp = populations_from_chain(mask.astype(int), 2, run_lengths)[1]
        else:
            p, dp = weighted_mean(mask.astype(float), log_weights, rng=rng)
            p, dp = float(p), float(dp)
        if p <= 0:
            f, df = np.inf, np.nan
        else:
            f, df = float(-np.log(p)), (dp / p if dp < p else np.inf)
        out[name] = dict(population=p, population_error=dp, free_energy=f, free_energy_error=df)
        if ess is not None:
            out[name]["ess"] = ess
            inside = np.asarray(log_weights, dtype=float)[mask]
            out[name]["state_ess"] = float(effective_sample_size(inside)) if mask.any() and np.isfinite(inside).any() else 0.0
    return out
