"""A user's own System: serialized XML + PDB, or a PDB + force-field files, through the library
and the command line; mismatched files give clear errors."""

import openmm
import openmm.app as app
import pytest

from openmm_arbg.simulation.systems import build_system, capped_peptide


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    ms = capped_peptide("GA")
    d = tmp_path_factory.mktemp("user")
    with open(d / "system.xml", "w") as f:
        f.write(openmm.XmlSerializer.serialize(ms.system))
    with open(d / "structure.pdb", "w") as f:
        app.PDBFile.writeFile(ms.topology, ms.positions, f, keepIds=True)
    return ms, d


def test_xml_and_pdb(user_files):
    ms, d = user_files
    user = build_system(f"{d}/system.xml:{d}/structure.pdb", temperature=320)
    assert user.n_atoms == ms.n_atoms and abs(user.temperature._value - 320) < 1e-12
    with pytest.raises(ValueError, match="needs its structure"):
        build_system(f"{d}/system.xml")
    with pytest.raises(FileNotFoundError):
        build_system(f"{d}/missing.xml:{d}/structure.pdb")
    other = capped_peptide("AG")  # same atom count, atoms in another order
    with open(d / "other.xml", "w") as f:
        f.write(openmm.XmlSerializer.serialize(other.system))
    with pytest.raises(ValueError, match="another molecule|particles"):
        build_system(f"{d}/other.xml:{d}/structure.pdb")


def test_pdb_with_force_field(user_files):
    ms, d = user_files
    user = build_system(f"{d}/structure.pdb:amber14-all.xml,implicit/obc1.xml")
    assert user.system.getNumParticles() == ms.n_atoms and user.system.getNumConstraints() == 0
    with pytest.raises(ValueError, match="cannot parameterise"):
        build_system(f"{d}/structure.pdb:no_such_forcefield.xml")
    with pytest.raises(ValueError, match="system.xml is a serialized System.*the System first"):
        build_system(f"{d}/structure.pdb:{d}/system.xml")  # the two files the wrong way round


def test_sample_command_on_a_user_system(user_files, tmp_path):
    import numpy as np

    from openmm_arbg import ArBG
    from openmm_arbg.cli import main

    from conftest import TINY_NETWORK, jittered

    ms, d = user_files
    model = ArBG.from_data(ms.topology, jittered(ms.positions_nm(), 64, 0.003), n_bins=16, network=TINY_NETWORK)
    model.save(tmp_path / "m.safetensors")
    code = main(["sample", "--model", str(tmp_path / "m.safetensors"), "--system", f"{d}/system.xml:{d}/structure.pdb",
                 "--n", "64", "--output", str(tmp_path / "s.dcd")])
    assert code == 0 and (tmp_path / "s.dcd").exists()
    del np


def test_hydrogen_mass_repartitioning_passes_the_particle_check(user_files):
    import openmm.unit as unit

    from openmm_arbg.molecule.topology import MolecularGraph
    from openmm_arbg.physics import check_system_matches_molecule

    ms, _ = user_files
    graph = MolecularGraph.from_topology(ms.topology)
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ms.system))
    for i, j in graph.bonds:  # move 2 Da from each heavy atom to each of its hydrogens
        h, heavy = (i, j) if graph.elements[i] == "H" else (j, i) if graph.elements[j] == "H" else (None, None)
        if h is None:
            continue
        system.setParticleMass(h, system.getParticleMass(h) + 2 * unit.dalton)
        system.setParticleMass(heavy, system.getParticleMass(heavy) - 2 * unit.dalton)
    check_system_matches_molecule(system, graph)
    system.setParticleMass(0, system.getParticleMass(0) + 0.5 * unit.dalton)
    with pytest.raises(ValueError, match="weighs|hydrogen"):
        check_system_matches_molecule(system, graph)


def test_unreadable_pdb_and_periodic_system_are_refused(user_files, tmp_path):
    ms, d = user_files
    (tmp_path / "empty.pdb").write_text("")
    (tmp_path / "trunc.pdb").write_text((d / "structure.pdb").read_text()[:500])
    for pdb in ("empty.pdb", "trunc.pdb"):
        with pytest.raises(ValueError, match="readable PDB|no atoms|particles"):
            build_system(f"{d}/system.xml:{tmp_path / pdb}")
    with pytest.raises(ValueError, match="readable PDB|no atoms"):
        build_system(f"{tmp_path / 'empty.pdb'}")
    periodic = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ms.system))
    periodic.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
    nb = [f for f in periodic.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    nb.setNonbondedMethod(openmm.NonbondedForce.PME)
    (tmp_path / "pme.xml").write_text(openmm.XmlSerializer.serialize(periodic))
    with pytest.raises(ValueError, match="periodic boundary conditions.*NoCutoff"):
        build_system(f"{tmp_path / 'pme.xml'}:{d}/structure.pdb")


def test_md_and_umbrella_refuse_to_resume_with_another_system(user_files, tmp_path):
    """A rerun in the same folder with the System changed (same file name, another force field)
    is refused, not continued with mixed frames."""
    from openmm_arbg.analysis.observables import dihedral_indices
    from openmm_arbg.simulation.md import run_md
    from openmm_arbg.simulation.umbrella import dihedral_grid, run_umbrella

    ms, d = user_files
    run_md(ms, str(tmp_path / "md"), n_steps=20, report_interval=10, equilibration_steps=0, progress=False, platform="Reference")
    other = build_system(f"{d}/structure.pdb:amber14-all.xml,implicit/obc2.xml")
    other.name = ms.name  # the same name: only the force field differs
    with pytest.raises(ValueError, match="system_sha256"):
        run_md(other, str(tmp_path / "md"), n_steps=20, report_interval=10, equilibration_steps=0, progress=False, platform="Reference")
    umbrella = dict(dihedrals=dihedral_indices(ms.topology, ["phi2"]), centres=dihedral_grid(2, 1), n_steps=20, report_interval=10,
                    equilibration_steps=0, progress=False, platform="Reference")
    run_umbrella(ms, output_dir=str(tmp_path / "u"), **umbrella)
    with pytest.raises(ValueError, match="system_sha256"):
        run_umbrella(other, output_dir=str(tmp_path / "u"), **umbrella)


def test_atoms_of_equal_mass_in_another_order_are_refused(user_files, tmp_path):
    """Two hydrogens of different groups swapped in the PDB (Ala HA and HB1): the masses still fit,
    the bonds do not; the error names the particles and says how to write matching files."""
    ms, d = user_files
    lines = (d / "structure.pdb").read_text().splitlines()
    ala = [k for k, line in enumerate(lines) if line.startswith(("ATOM", "HETATM")) and line[17:20] == "ALA"]
    ha, hb1 = (next(k for k in ala if lines[k][12:16].strip() == name) for name in ("HA", "HB1"))
    lines[ha], lines[hb1] = lines[hb1], lines[ha]
    (tmp_path / "swapped.pdb").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bond between particles \d+ and \d+.*not bonded.*PDBFile.writeFile"):
        build_system(f"{d}/system.xml:{tmp_path / 'swapped.pdb'}")
    build_system(f"{d}/system.xml:{d}/structure.pdb")  # the files as written still match
