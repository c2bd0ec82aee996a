"""States found automatically (TICA + k-means + PCCA+, deeptime): on trajectories whose states are
known by construction (a Markov jump process between Ramachandran basins, each frame a rigid
rotation of the backbone dihedrals of a real structure), for two molecules; populations from the
chain and from importance weights against the process's exact stationary distribution; the
'outside' state; saved states; the command line."""

import doctest
import itertools

import numpy as np
import pytest

from openmm_arbg.analysis import state_discovery
from openmm_arbg.analysis.observables import named_dihedrals
from openmm_arbg.analysis.state_discovery import DiscoveredStates, discover_states
from openmm_arbg.analysis.states import state_populations
from openmm_arbg.molecule.topology import MolecularGraph
from openmm_arbg.simulation.md import rotate_dihedrals

BETA, ALPHA_R, ALPHA_L = (-120.0, 130.0), (-70.0, -40.0), (60.0, 40.0)
PI = np.array([0.6, 0.3, 0.1])  # the jump process's stationary distribution (exact)


@pytest.fixture(scope="module")
def aa():
    from openmm_arbg.simulation.systems import build_system

    return build_system("peptide:AA")


def _basins(molecule):
    """Three states as (phi, psi) per residue: alanine dipeptide's three basins, or for a
    two-residue peptide both beta, both alpha_R, and beta then alpha_L."""
    n_res = sum(k.startswith("phi") and k[3:].isdigit() for k in named_dihedrals(molecule.topology))
    if n_res == 1:
        return [[BETA], [ALPHA_R], [ALPHA_L]]
    return [[BETA] * n_res, [ALPHA_R] * n_res, [BETA] * (n_res - 1) + [ALPHA_L]]


def _quads(molecule):
    named = named_dihedrals(molecule.topology)
    residues = sorted(int(k[3:]) for k in named if k.startswith("phi") and k[3:].isdigit())
    return [named[f"{a}{r}"] for r in residues for a in ("phi", "psi")]


def jump_trajectory(molecule, n, seed, switch=0.02, noise_deg=12.0, iid=False):
    """Frames of a Markov jump process between the three states of :func:`_basins` (each step:
    with probability ``switch`` a new state drawn from PI, which keeps PI stationary), dihedrals
    at the state's centres plus Gaussian noise; ``iid``: independent states drawn uniformly.
    Returns (positions (n, N, 3) nm, state labels (n,))."""
    rng = np.random.default_rng(seed)
    basins = np.radians(np.array(_basins(molecule)).reshape(3, -1))
    quads = _quads(molecule)
    neighbors = MolecularGraph.from_topology(molecule.topology).neighbors
    x0 = molecule.positions_nm()
    labels = np.empty(n, dtype=int)
    state = rng.choice(3, p=PI)
    for t in range(n):
        if iid:
            state = rng.integers(3)
        elif rng.random() < switch:
            state = rng.choice(3, p=PI)
        labels[t] = state
    targets = basins[labels] + np.radians(noise_deg) * rng.normal(size=(n, basins.shape[1]))
    frames = np.array([rotate_dihedrals(x0, neighbors, quads, tg) for tg in targets])
    return frames, labels


def _true_state(found, truth):
    """The true state of each found state: the commonest true label among its frames."""
    return [int(np.bincount(truth[found == k], minlength=3).argmax()) for k in range(3)]


def _agreement(found, truth, k=3):
    """Best fraction of frames with equal labels over relabellings of the found states."""
    return max(np.mean(np.array(p)[found] == truth) for p in itertools.permutations(range(k)))


@pytest.mark.parametrize("molecule_name", ["alanine", "aa"])
@pytest.mark.parametrize("method", ["pcca", "kmeans"])
def test_discovered_states_are_the_true_states(molecule_name, method, request):
    molecule = request.getfixturevalue(molecule_name)
    x, truth = jump_trajectory(molecule, 3000, seed=1)
    states = discover_states(x, molecule.topology, n_states=3, lag=10, method=method, seed=0)
    assert states.n_states == 3 and states.names == ["S1", "S2", "S3"]
    labels = states.assign(x)
    assert np.mean(labels < 0) < 0.005  # hardly any frame of the MD's own distribution is 'outside'
    assert _agreement(labels, truth) > 0.99
    # most populated first, and the fitted fractions are those of the frames
    assert states.fit_populations == sorted(states.fit_populations, reverse=True)
    assert np.allclose(np.bincount(labels[labels >= 0], minlength=3) / len(x), states.fit_populations, atol=0.005)
    # the description of the beta state names the beta dihedrals
    beta = _true_state(labels, truth).index(0)
    assert "phi2 -12" in states.descriptions[beta] and "psi2 13" in states.descriptions[beta]
    # frames from an independent run get the same states
    y, truth_y = jump_trajectory(molecule, 1000, seed=2)
    assert _agreement(states.assign(y), truth_y) > 0.99


@pytest.mark.parametrize("molecule_name", ["alanine", "aa"])
def test_populations_of_discovered_states_match_the_stationary_distribution(molecule_name, request):
    molecule = request.getfixturevalue(molecule_name)
    fit, fit_truth = jump_trajectory(molecule, 3000, seed=3)
    states = discover_states(fit, molecule.topology, n_states=3, lag=10)
    pi = PI[_true_state(states.assign(fit), fit_truth)]  # the exact population of each found state
    # a chain (errors from the statistical inefficiency)
    chain, _ = jump_trajectory(molecule, 6000, seed=4)
    result = state_populations(states.states(), chain, molecule.topology)
    assert result["outside"]["population"] < 0.005
    for k, name in enumerate(states.names):
        r = result[name]
        assert abs(r["population"] - pi[k]) < 4 * r["population_error"], (name, r)
    # importance sampling: independent uniform proposals weighted by PI / (1/3)
    proposals, truth = jump_trajectory(molecule, 3000, seed=5, iid=True)
    result = state_populations(states.states(), proposals, molecule.topology, log_weights=np.log(PI[truth] * 3), rng=0)
    for k, name in enumerate(states.names):
        r = result[name]
        assert abs(r["population"] - pi[k]) < 4 * r["population_error"], (name, r)
        assert r["population_error"] < 0.02


def test_frames_where_the_md_never_went_are_outside(alanine):
    fit, _ = jump_trajectory(alanine, 3000, seed=6)
    states = discover_states(fit, alanine.topology, n_states=3, lag=10)
    neighbors = MolecularGraph.from_topology(alanine.topology).neighbors
    far = np.array([rotate_dihedrals(alanine.positions_nm(), neighbors, _quads(alanine), np.radians([phi, psi]))
                    for phi, psi in ((170.0, -90.0), (90.0, 180.0))])
    assert (states.assign(far) == -1).all()
    assert state_populations(states.states(), far, alanine.topology)["outside"]["population"] == 1
    # without the rule every frame gets its nearest state
    data = {k: getattr(states, k) for k in states.__dataclass_fields__}
    data["outside_points"] = []
    assert (DiscoveredStates(**data).assign(far) >= 0).all()


def test_saved_states_read_back_and_belong_to_their_molecule(alanine, aa, tmp_path):
    fit, _ = jump_trajectory(alanine, 2000, seed=7)
    states = discover_states(fit, alanine.topology, n_states=3, lag=10)
    states.save(tmp_path / "s.json")
    again = DiscoveredStates.load(tmp_path / "s.json")
    assert again == states
    assert np.array_equal(again.assign(fit), states.assign(fit))
    again.check_topology(alanine.topology)
    with pytest.raises(ValueError, match="atoms"):
        again.check_topology(aa.topology)
    with pytest.raises(ValueError, match="atoms"):
        again.assign(aa.positions_nm()[None])
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a states file"):
        DiscoveredStates.load(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="--save-states"):
        DiscoveredStates.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="n_states"):
        discover_states(fit, alanine.topology, n_states=1)
    with pytest.raises(ValueError, match="lag"):
        discover_states(fit[:50], alanine.topology, n_states=3, lag=60)


def test_module_example():
    assert doctest.testmod(state_discovery).failed == 0


def test_free_energy_command_discovers_saves_and_reuses_states(alanine, tmp_path, capsys):
    import mdtraj

    from openmm_arbg.cli import main

    x, _ = jump_trajectory(alanine, 3000, seed=8)
    top = mdtraj.Topology.from_openmm(alanine.topology)
    mdtraj.Trajectory(x, top).save_dcd(str(tmp_path / "md.dcd"))
    mdtraj.Trajectory(x[:1], top).save_pdb(str(tmp_path / "top.pdb"))
    common = ["free-energy", "--trajectory", str(tmp_path / "md.dcd"), "--topology", str(tmp_path / "top.pdb")]
    assert main(common + ["--discover", "3", "--lag", "10", "--save-states", str(tmp_path / "s.json"),
                          "--plot", str(tmp_path / "fe.png")]) == 0
    first = capsys.readouterr().out
    assert "3 states found by TICA + k-means + PCCA+" in first and "P(S1) = " in first and "P(outside)" in first
    assert (tmp_path / "fe.png").stat().st_size > 0
    assert main(common + ["--states-file", str(tmp_path / "s.json"), "--state", "C7ax=phi > 0"]) == 0
    second = capsys.readouterr().out
    lines = [line for line in first.splitlines() if line.startswith("  P(S")]
    assert lines and all(line in second for line in lines)  # the same states, the same populations
    assert "P(C7ax)" in second
    # mistakes: discovery with importance sampling needs MD to find states on; options without --discover
    for argv in (["free-energy", "--model", "alanine_dipeptide_vacuum", "--discover", "3"],
                 common + ["--save-states", str(tmp_path / "t.json")],
                 common + ["--discover", "3", "--states-file", str(tmp_path / "s.json")],
                 common + ["--plot", str(tmp_path / "p.png")]):
        assert main(argv) == 2, argv
    assert "--discover-from" in capsys.readouterr().err


def test_discover_from_reads_the_topology_beside_the_trajectory(alanine, tmp_path, capsys):
    """--model with --discover-from and no --topology: the topology.pdb that arbg md writes
    beside a trajectory is used, as for --trajectory; without one the error names --topology."""
    import mdtraj

    from openmm_arbg.cli import main

    x, _ = jump_trajectory(alanine, 2000, seed=8)
    top = mdtraj.Topology.from_openmm(alanine.topology)
    (tmp_path / "md").mkdir()
    mdtraj.Trajectory(x, top).save_dcd(str(tmp_path / "md" / "trajectory.dcd"))
    mdtraj.Trajectory(x, top).save_dcd(str(tmp_path / "alone.dcd"))
    mdtraj.Trajectory(x[:1], top).save_pdb(str(tmp_path / "md" / "topology.pdb"))
    argv = ["free-energy", "--model", "alanine_dipeptide_vacuum", "--n", "300", "--seed", "1", "--discover", "2",
            "--lag", "10"]
    assert main(argv + ["--discover-from", str(tmp_path / "md" / "trajectory.dcd")]) == 0
    out = capsys.readouterr().out
    assert "2 states found by TICA + k-means + PCCA+" in out and "P(S1) = " in out
    assert main(argv + ["--discover-from", str(tmp_path / "alone.dcd")]) != 0
    assert "--topology" in capsys.readouterr().err


def test_free_energy_command_asks_for_states_for_other_molecules(aa, tmp_path, capsys):
    import mdtraj

    from openmm_arbg.cli import main

    x, _ = jump_trajectory(aa, 300, seed=9)
    top = mdtraj.Topology.from_openmm(aa.topology)
    mdtraj.Trajectory(x, top).save_dcd(str(tmp_path / "md.dcd"))
    mdtraj.Trajectory(x[:1], top).save_pdb(str(tmp_path / "top.pdb"))
    assert main(["free-energy", "--trajectory", str(tmp_path / "md.dcd"), "--topology", str(tmp_path / "top.pdb")]) != 0
    assert "--discover N" in capsys.readouterr().err


def test_weighted_populations_carry_their_ess_and_a_warning_when_it_is_tiny(alanine):
    from openmm_arbg.analysis.state_discovery import describe_results

    x, truth = jump_trajectory(alanine, 200, seed=10, iid=True)
    states = {"beta": "phi2 < -100"}
    even = state_populations(states, x, alanine.topology, log_weights=np.zeros(len(x)), rng=0)
    assert even["beta"]["ess"] == pytest.approx(len(x))
    assert not any("warning" in line for line in describe_results(even))
    spiked = np.zeros(len(x))
    spiked[:2] = 30.0  # two proposals hold the weight
    result = state_populations(states, x, alanine.topology, log_weights=spiked, rng=0)
    assert result["beta"]["ess"] == pytest.approx(2.0, rel=1e-6)
    assert "ESS is 2.0" in describe_results(result)[0]
