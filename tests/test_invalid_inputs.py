"""Every bad input gets a clear error (issue 11).

Two tables: invalid command lines of every ``arbg`` command, and invalid arguments of the main
public functions and classes. Each row is the input and words the error message must contain
(case-insensitive): the option or argument, the bad value, and what is allowed or what to do. A
command must exit with code 2 and a message on stderr (never a traceback); a function must
raise the given exception type. Where each check lives: ``docs/reliability.md``, "Invalid inputs".
"""

import json
import os
import types

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from conftest import TINY_NETWORK, jittered

N_FRAMES = 40


# ---------------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def fx(tmp_path_factory, alanine):
    """Files and objects the rows use: a PDB and a DCD of alanine dipeptide, the same PDB with two
    atoms in another order, a truncated DCD, a tiny saved model, damaged model files, YAML files."""
    import mdtraj
    from safetensors.torch import load_file, save_file

    from openmm_arbg import ArBG

    d = tmp_path_factory.mktemp("invalid_inputs")
    top = mdtraj.Topology.from_openmm(alanine.topology)
    x = jittered(alanine.positions_nm(), N_FRAMES, scale=0.003)
    traj = mdtraj.Trajectory(x.astype(np.float32), top)
    pdb, dcd = d / "top.pdb", d / "frames.dcd"
    traj[0].save(str(pdb))
    traj.save(str(dcd))

    # the same molecule with ALA's H (on N) and HA (on CA) listed the other way round: a valid
    # PDB of its own, but the DCD's atom 7 is then read as HA, 0.21 nm from CA (plausible)
    lines = pdb.read_text().splitlines(keepends=True)
    atoms = [i for i, line in enumerate(lines) if line.startswith(("ATOM", "HETATM"))]
    h = next(i for i in atoms if lines[i][17:20] == "ALA" and lines[i][12:16].strip() == "H")
    ha = next(i for i in atoms if lines[i][17:20] == "ALA" and lines[i][12:16].strip() == "HA")
    lines[h], lines[ha] = lines[ha], lines[h]
    lines = [line for line in lines if not line.startswith("CONECT")]
    for serial, i in enumerate(atoms, 1):
        lines[i] = lines[i][:6] + f"{serial:5d}" + lines[i][11:]
    swapped = d / "swapped.pdb"
    swapped.write_text("".join(lines))

    data = dcd.read_bytes()
    trunc = d / "trunc.dcd"
    trunc.write_bytes(data[: len(data) - 300])  # the last frame and a part of the one before
    empty = d / "empty.dcd"
    empty.write_bytes(b"")
    not_traj = d / "notes.dcd"
    not_traj.write_text("these are notes, not a trajectory\n")

    model = ArBG.from_data(alanine.topology, x, n_bins=16, network=TINY_NETWORK, seed=0)
    model_path = d / "model.safetensors"
    model.save(model_path)
    tensors = load_file(str(model_path))
    from safetensors import safe_open

    with safe_open(str(model_path), framework="pt") as f:
        meta = f.metadata()
    key = next(iter(meta))
    nan_tensors = dict(tensors)
    first = sorted(nan_tensors)[0]
    nan_tensors[first] = nan_tensors[first].clone().fill_(float("nan"))
    nan_model = d / "nan.safetensors"
    save_file(nan_tensors, str(nan_model), metadata=meta)
    bad_meta = d / "bad_meta.safetensors"
    save_file(tensors, str(bad_meta), metadata={key: meta[key][: len(meta[key]) // 2]})  # cut JSON
    config = json.loads(meta[key])
    del config["molecule"]["discretizer"]
    no_bins = d / "no_bins.safetensors"
    save_file(tensors, str(no_bins), metadata={key: json.dumps(config)})
    text_model = d / "text.safetensors"
    text_model.write_text("not a model\n")

    yaml = {
        "bad_yaml": "ns: [1, 2\n",
        "unknown_key": "nss: 1\n",
        "wrong_type": "ns: fast\n",
        "not_mapping": "- ns\n- 1\n",
        "train_wrong_type": "n_steps: many\n",
        "train_unknown": "n_step: 5\n",
        "flag_wrong_type": "quiet: maybe\n",
    }
    for name, text in yaml.items():
        (d / f"{name}.yaml").write_text(text)

    paths = dict(
        tmp=str(d), pdb=str(pdb), dcd=str(dcd), swapped=str(swapped), trunc=str(trunc), empty=str(empty), notes=str(not_traj),
        model=str(model_path), nan_model=str(nan_model), bad_meta=str(bad_meta), no_bins=str(no_bins), text_model=str(text_model),
        missing=str(d / "missing"), **{name: str(d / f"{name}.yaml") for name in yaml},
    )
    files = {k: v for k, v in paths.items() if k != "model"}
    return types.SimpleNamespace(ms=alanine, x=x, model=ArBG.load(model_path), model_path=str(model_path), paths=paths, **files)


# ---------------------------------------------------------------------------- command lines
SYS = ["--system", "alanine_dipeptide_vacuum"]
TRAIN = ["train", "--trajectories", "{dcd}", "--topology", "{pdb}", "--output", "{tmp}/train", "--quiet"]
FE = ["free-energy", "--trajectory", "{dcd}", "--topology", "{pdb}"]
EVAL = ["evaluate", "--model", "{model}", "--reference", "{dcd}", "--topology", "{pdb}", *SYS, "--n", "8", "--output", "{tmp}/eval"]
SAMPLE = ["sample", "--model", "{model}", "--n", "4"]
MCMC = ["mcmc", "--model", "{model}", *SYS, "--iterations", "2", "--output", "{tmp}/chain.dcd", "--quiet"]
SMC = ["smc", "--model", "{model}", *SYS, "--n", "8"]
PROFILE = ["profile", "--model", "{model}", *SYS, "--output", "{tmp}/profile", "--quiet"]
UMB = ["umbrella", "--windows", "2", "--ps", "0.02", "--report-ps", "0.01", "--equilibration-ps", "0.01", "--output", "{tmp}/umb", "--quiet"]
META = ["metadynamics", "--build-ps", "0.02", "--ps", "0.02", "--report-ps", "0.01", "--deposit-ps", "0.01", "--chunks", "1",
        "--output", "{tmp}/meta", "--quiet"]
ST = ["self-train", "--model", "{model}", *SYS, "--n-rounds", "1", "--n-proposals", "4", "--n-steps", "1", "--output", "{tmp}/st",
      "--quiet"]
PMD = ["peptide-md", "--output", "{tmp}/pmd", "--quiet", "--sequences"]
TT = ["train-transferable", "--output", "{tmp}/tt", "--quiet", "--md"]
MD = ["md", "--ns", "0.0001", "--report-ps", "0.01", "--equilibration-ps", "0", "--output", "{tmp}/md", "--quiet"]

# id, argv, words the message names
CLI_ROWS = [
    # md: sizes, times, temperatures, platform, system, output
    ("md-ns-zero", MD + ["--ns", "0"], ["--ns", "positive", "0"]),
    ("md-ns-negative", MD + ["--ns", "-1"], ["--ns", "positive", "-1"]),
    ("md-ns-nan", MD + ["--ns", "nan"], ["--ns", "positive", "nan"]),
    ("md-report-ps-zero", MD + ["--report-ps", "0"], ["--report-ps", "positive", "0"]),
    ("md-timestep-negative", MD + ["--timestep-fs", "-1"], ["--timestep-fs", "positive", "-1"]),
    ("md-timestep-nan", MD + ["--timestep-fs", "nan"], ["--timestep-fs", "positive", "nan"]),
    ("md-friction-zero", MD + ["--friction-per-ps", "0"], ["--friction-per-ps", "positive", "0"]),
    ("md-friction-nan", MD + ["--friction-per-ps", "nan"], ["--friction-per-ps", "positive", "nan"]),
    ("md-equilibration-negative", MD + ["--equilibration-ps", "-5"], ["--equilibration-ps", "negative", "-5"]),
    ("md-temperature-zero", MD + ["--temperatures", "0"], ["--temperatures", "positive", "0"]),
    ("md-temperature-nan", MD + ["--temperatures", "300", "nan"], ["--temperatures", "positive", "nan"]),
    ("md-chunk-frames-zero", MD + ["--chunk-frames", "0"], ["--chunk-frames", "positive", "0"]),
    ("md-report-shorter-than-step", MD + ["--report-ps", "0.0001"], ["0.0001 ps", "shorter than one time step"]),
    ("md-unknown-platform", MD + ["--platform", "Quantum"], ["--platform", "quantum", "reference"]),
    ("md-unknown-system", MD + ["--system", "nonsense"], ["nonsense", "peptide:"]),
    ("md-output-is-file", MD + ["--output", "{pdb}"], ["--output", "top.pdb", "folder"]),
    # --config: missing, malformed, unknown key, wrong type
    ("config-missing", MD + ["--config", "{missing}.yaml"], ["config", "missing.yaml", "no such file"]),
    ("config-bad-yaml", MD + ["--config", "{bad_yaml}"], ["bad_yaml.yaml", "not valid yaml"]),
    ("config-unknown-key", MD + ["--config", "{unknown_key}"], ["unknown setting", "nss", "did you mean 'ns'"]),
    ("config-wrong-type", MD + ["--config", "{wrong_type}"], ["ns", "must be a number", "fast"]),
    ("config-not-mapping", MD + ["--config", "{not_mapping}"], ["not_mapping.yaml", "mapping"]),
    ("config-flag-wrong-type", SAMPLE + ["--config", "{flag_wrong_type}"], ["quiet", "true or false", "maybe"]),
    ("config-train-wrong-type", TRAIN + ["--config", "{train_wrong_type}"], ["n_steps", "an integer", "many"]),
    ("config-train-unknown-key", TRAIN + ["--config", "{train_unknown}"], ["unknown setting", "n_step", "did you mean 'n_steps'"]),
    # peptide-md: sequences, times
    ("peptide-md-missing", ["peptide-md"], ["missing", "--sequences"]),
    ("peptide-md-bad-sequence", PMD + ["AZ"], ["one-letter codes", "AZ", "not amino acids: Z"]),
    ("peptide-md-twice", PMD + ["A", "A"], ["listed twice", "A"]),
    ("peptide-md-ns", PMD + ["A", "--ns", "0"], ["--ns", "positive"]),
    ("peptide-md-workers", PMD + ["A", "--workers", "0"], ["--workers", "0"]),
    ("peptide-md-starts", PMD + ["A", "--basin-starts", "3", "--ns", "0.001", "--report-ps", "0.1"], ["evenly", "3 starts"]),
    # train-transferable: folders, sizes, a single-molecule model file where a transferable one belongs
    ("transfer-missing-options", ["train-transferable"], ["missing", "--md"]),
    ("transfer-missing-folder", TT + ["{missing}"], ["missing", "does not exist"]),
    ("transfer-not-md-folder", TT + ["{tmp}"], ["no trajectory.dcd", "arbg md output folder"]),
    ("transfer-steps-zero", TT + ["{tmp}", "--n-steps", "0"], ["n_steps", "positive integer"]),
    ("transfer-margin", TT + ["{tmp}", "--margin", "-1"], ["--margin", "-1"]),
    ("transfer-lr", TT + ["{tmp}", "--learning-rate", "0"], ["learning_rate", "positive"]),
    ("transfer-warmup", TT + ["{tmp}", "--n-steps", "30", "--warmup-steps", "100"], ["warmup_steps (100)", "fewer than n_steps (30)"]),
    ("transfer-md-file", TT + ["{pdb}"], ["is a file", "give the folder"]),
    ("evaluate-lag", EVAL + ["--lag", "100000"], ["longer than the TICA lag", "--lag"]),
    # train: files, atom order, truncation, sizes, device
    ("train-missing-options", ["train"], ["missing", "--trajectories"]),
    ("train-missing-trajectory", TRAIN[:2] + ["{missing}.dcd"] + TRAIN[3:], ["missing.dcd", "does not exist"]),
    ("train-missing-topology", TRAIN[:4] + ["{missing}.pdb"] + TRAIN[5:], ["missing.pdb", "does not exist"]),
    ("train-empty-trajectory", TRAIN[:2] + ["{empty}"] + TRAIN[3:], ["empty.dcd", "empty"]),
    ("train-not-a-trajectory", TRAIN[:2] + ["{notes}"] + TRAIN[3:], ["notes.dcd", "cannot read"]),
    ("train-atoms-in-another-order", TRAIN[:4] + ["{swapped}"] + TRAIN[5:], ["swapped.pdb", "bond", "atom order", "h"]),
    ("train-truncated-dcd", TRAIN[:2] + ["{trunc}"] + TRAIN[3:], ["trunc.dcd", "truncated", f"{N_FRAMES} frames"]),
    ("train-stride-zero", TRAIN + ["--stride", "0"], ["--stride", "positive", "0"]),
    ("train-n-steps-zero", TRAIN + ["--n-steps", "0"], ["n_steps", ">= 1", "0"]),
    ("train-batch-size-negative", TRAIN + ["--batch-size", "-4"], ["batch_size", ">= 1", "-4"]),
    ("train-learning-rate-nan", TRAIN + ["--learning-rate", "nan"], ["learning_rate", "nan"]),
    ("train-time-budget-negative", TRAIN + ["--time-budget-s", "-5"], ["time_budget_s", "-5"]),
    ("train-max-time-nan", TRAIN + ["--max-time-s", "nan"], ["max_time_s", "nan"]),
    ("train-n-bins-one", TRAIN + ["--n-bins", "1"], ["n_bins", ">= 2", "1"]),
    ("train-unknown-representation", TRAIN + ["--representation", "polar"], ["--representation", "polar", "internal"]),
    ("train-unknown-device", TRAIN + ["--device", "tpu9"], ["--device", "tpu9", "cpu"]),
    # sample
    ("sample-n-zero", SAMPLE + ["--n", "0"], ["--n", "positive", "0"]),
    ("sample-chunk-size-zero", SAMPLE + ["--chunk-size", "0"], ["--chunk-size", "positive", "0"]),
    ("sample-workers-zero", SAMPLE + ["--workers", "0"], ["--workers", "positive", "0"]),
    ("sample-unknown-device", SAMPLE + ["--device", "gpu"], ["--device", "gpu", "cuda"]),
    ("mcmc-unknown-device", MCMC + ["--device", "tpu"], ["--device", "tpu", "cpu"]),
    ("mcmc-workers-zero", MCMC + ["--workers", "0"], ["--workers", "positive", "0"]),
    ("sample-temperature-zero", SAMPLE + ["--temperature", "0"], ["--temperature", "positive", "0"]),
    ("sample-temperature-nan", SAMPLE + ["--temperature", "nan"], ["--temperature", "positive", "nan"]),
    ("sample-proposal-temperature-zero", SAMPLE + ["--proposal-temperature", "0", "--no-weights"], ["--proposal-temperature", "positive", "0"]),
    ("sample-model-missing", ["sample", "--model", "{missing}.safetensors", "--no-weights"], ["missing.safetensors", "no checkpoint"]),
    ("sample-model-nan-weights", ["sample", "--model", "{nan_model}", "--no-weights"], ["nan.safetensors", "nan", "weights"]),
    ("sample-model-cut-metadata", ["sample", "--model", "{bad_meta}", "--no-weights"], ["bad_meta.safetensors", "metadata", "corrupt"]),
    ("sample-model-metadata-lacks-bins", ["sample", "--model", "{no_bins}", "--no-weights"], ["no_bins.safetensors", "corrupt", "discretizer"]),
    ("sample-model-not-safetensors", ["sample", "--model", "{text_model}", "--no-weights"], ["text.safetensors", "not a readable"]),
    ("sample-output-bad-extension", SAMPLE + ["--output", "{tmp}/samples.txt"], ["--output", "samples.txt", ".dcd"]),
    # mcmc
    ("mcmc-iterations-zero", MCMC + ["--iterations", "0"], ["--iterations", "positive", "0"]),
    ("mcmc-chunk-iterations-zero", MCMC + ["--chunk-iterations", "0"], ["--chunk-iterations", "positive", "0"]),
    ("mcmc-attempts-zero", MCMC + ["--attempts", "0"], ["--attempts", "positive", "0"]),
    ("mcmc-langevin-steps-negative", MCMC + ["--langevin-steps", "-1"], ["--langevin-steps", ">= 0", "-1"]),
    ("mcmc-temperature-zero", MCMC + ["--temperature", "0"], ["--temperature", "positive", "0"]),
    ("mcmc-timestep-zero", MCMC + ["--timestep-fs", "0"], ["--timestep-fs", "positive", "0"]),
    ("mcmc-unknown-platform", MCMC + ["--platform", "Quantum"], ["--platform", "quantum", "reference"]),
    # smc
    ("smc-n-zero", SMC + ["--n", "0"], ["--n", "positive", "0"]),
    ("smc-repeats-zero", SMC + ["--repeats", "0"], ["--repeats", "positive", "0"]),
    ("smc-ess-threshold", SMC + ["--ess-threshold", "2"], ["--ess-threshold", "(0, 1]", "2"]),
    ("smc-temperature-zero", SMC + ["--temperature", "0"], ["--temperature", "positive", "0"]),
    ("smc-stage-out-of-range", SMC + ["--stages", "0"], ["--stages", "increasing", "[0]"]),
    ("smc-lambdas-without-stages", SMC + ["--lambdas", "0.5"], ["--lambdas", "--stages"]),
    ("smc-betas-out-of-range", SMC + ["--betas", "0.5", "1.5"], ["--betas", "(0, 1)", "1.5"]),
    ("smc-betas-with-stages", SMC + ["--betas", "0.5", "--stages", "30"], ["--betas", "--stages", "exclude"]),
    ("smc-step-nm-zero", SMC + ["--betas", "0.5", "--kernel", "random-walk", "--step-nm", "0"], ["--step-nm", "positive", "0"]),
    ("smc-kernel-without-betas", SMC + ["--kernel", "random-walk"], ["--kernel", "add --betas"]),
    ("smc-step-nm-without-random-walk", SMC + ["--betas", "0.5", "--step-nm", "0.001"], ["--step-nm", "--kernel random-walk"]),
    ("smc-betas-with-lambdas", SMC + ["--betas", "0.5", "--lambdas", "0.3"], ["--betas", "--lambdas", "exclude"]),
    # self-train
    ("self-train-missing-model", ["self-train"], ["missing", "--model"]),
    ("self-train-n-proposals-one", ST + ["--n-proposals", "1"], ["n_proposals", ">= 2", "1"]),
    ("self-train-start-below-target", ST + ["--start-temperature", "200"], ["start_temperature", "200", "below the target"]),
    ("self-train-anneal-without-start", ST + ["--anneal-rounds", "2"], ["anneal_rounds", "start_temperature"]),
    ("self-train-md-share", ST + ["--md-share", "1.5"], ["md_share", "[0, 1]", "1.5"]),
    ("self-train-temperature-unknown", ST + ["--trajectories", "{dcd}"], ["--trajectory-temperatures", "settings.json of arbg md"]),
    ("self-train-temperature-count", ST + ["--trajectories", "{dcd}", "--trajectory-temperatures", "300", "310"],
     ["one --trajectory-temperatures value per trajectory"]),
    ("self-train-bad-state", ST + ["--state", "phi>0"], ["--state", "name=expression", "phi>0"]),
    ("self-train-unknown-dihedral", ST + ["--state", "x=phi9 > 0"], ["phi9", "dihedrals of this molecule"]),
    ("self-train-missing-topology", ST + ["--trajectories", "{missing}.dcd", "--trajectory-temperatures", "300"],
     ["topology.pdb", "no topology.pdb beside it", "--topology"]),
    # free-energy
    ("fe-neither-source", ["free-energy"], ["--trajectory", "--model"]),
    ("fe-missing-trajectory", ["free-energy", "--trajectory", "{missing}.dcd", "--topology", "{pdb}"], ["missing.dcd", "does not exist"]),
    ("fe-missing-topology", ["free-energy", "--trajectory", "{dcd}", "--topology", "{missing}.pdb"], ["missing.pdb", "does not exist"]),
    ("fe-atoms-in-another-order", ["free-energy", "--trajectory", "{dcd}", "--topology", "{swapped}"], ["swapped.pdb", "bond", "atom order"]),
    ("fe-truncated-dcd", ["free-energy", "--trajectory", "{trunc}", "--topology", "{pdb}"], ["trunc.dcd", "truncated", f"{N_FRAMES} frames"]),
    ("fe-stride-zero", FE + ["--stride", "0"], ["--stride", "positive", "0"]),
    ("fe-state-without-name", FE + ["--state", "phi2 > 0"], ["--state", "phi2 > 0", "name=expression"]),
    ("fe-state-unknown-residue", FE + ["--state", "x=phi9 > 0"], ["phi9", "phi2"]),
    ("fe-state-syntax", FE + ["--state", "x=phi2 >> 0"], ["phi2 >> 0"]),
    ("fe-n-zero", ["free-energy", "--model", "{model}", *SYS, "--n", "0"], ["--n", "positive", "0"]),
    ("fe-temperature-zero", ["free-energy", "--model", "{model}", *SYS, "--temperature", "0"], ["--temperature", "positive", "0"]),
    # profile
    ("profile-grid-one", PROFILE + ["--grid", "1"], ["--grid", ">= 2", "1"]),
    ("profile-n-per-point-zero", PROFILE + ["--n-per-point", "0"], ["--n-per-point", ">= 2", "0"]),
    ("profile-n-per-point-not-shared", PROFILE + ["--n-per-point", "10"], ["--n-per-point 10", "multiple of the 4 sub-points"]),
    ("profile-subdivisions-zero", PROFILE + ["--subdivisions", "0"], ["--subdivisions", ">= 1", "0"]),
    ("profile-three-dihedrals", PROFILE + ["--dihedrals", "phi", "psi", "phi"], ["--dihedrals", "one or two", "3"]),
    ("profile-temperature-zero", PROFILE + ["--temperature", "0"], ["--temperature", "positive", "0"]),
    ("profile-not-a-model-coordinate", PROFILE + ["--dihedrals", "phi"], ["phi", "not a coordinate", "--first-torsions"]),
    # evaluate
    ("evaluate-missing-options", ["evaluate", "--model", "{model}"], ["missing", "--reference"]),
    # no --topology and no topology.pdb (what arbg md writes) beside the trajectory
    ("evaluate-no-topology", ["evaluate", "--model", "{model}", "--reference", "{dcd}", *SYS, "--n", "8", "--output", "{tmp}/e2"],
     ["give the topology file of", "frames.dcd", "--topology", "no topology.pdb beside it"]),
    ("train-no-topology", ["train", "--trajectories", "{dcd}", "--output", "{tmp}/t2", "--quiet"],
     ["give the topology file of", "frames.dcd", "--topology"]),
    ("fe-no-topology", ["free-energy", "--trajectory", "{dcd}", "--state", "a=phi2 > 0"], ["give the topology file of", "--topology"]),
    ("evaluate-n-zero", EVAL + ["--n", "0"], ["--n", "positive", "0"]),
    ("evaluate-stride-zero", EVAL + ["--stride", "0"], ["--stride", "positive", "0"]),
    ("evaluate-lag-zero", EVAL + ["--lag", "0"], ["--lag", "positive", "0"]),
    ("evaluate-max-points-zero", EVAL + ["--max-points", "0"], ["--max-points", "positive", "0"]),
    ("evaluate-workers-zero", EVAL + ["--workers", "0"], ["--workers", "positive", "0"]),
    ("evaluate-temperature-zero", EVAL + ["--temperature", "0"], ["--temperature", "positive", "0"]),
    ("evaluate-missing-reference", EVAL[:4] + ["{missing}.dcd"] + EVAL[5:], ["missing.dcd", "does not exist"]),
    ("evaluate-atoms-in-another-order", EVAL[:6] + ["{swapped}"] + EVAL[7:], ["swapped.pdb", "bond", "atom order"]),
    ("evaluate-truncated-dcd", EVAL[:4] + ["{trunc}"] + EVAL[5:], ["trunc.dcd", "truncated", f"{N_FRAMES} frames"]),
    # umbrella
    ("umbrella-one-window", UMB + ["--windows", "1"], ["--windows", ">= 2", "1"]),
    ("umbrella-k-zero", UMB + ["--k", "0"], ["--k", "positive", "0"]),
    ("umbrella-ps-zero", UMB + ["--ps", "0"], ["--ps", "positive", "0"]),
    ("umbrella-report-ps-nan", UMB + ["--report-ps", "nan"], ["--report-ps", "positive", "nan"]),
    ("umbrella-equilibration-negative", UMB + ["--equilibration-ps", "-1"], ["--equilibration-ps", "negative", "-1"]),
    ("umbrella-temperature-zero", UMB + ["--temperature", "0"], ["--temperature", "positive", "0"]),
    ("umbrella-timestep-zero", UMB + ["--timestep-fs", "0"], ["--timestep-fs", "positive", "0"]),
    ("umbrella-workers-zero", UMB + ["--workers", "0"], ["--workers", "positive", "0"]),
    ("umbrella-mbar-samples-zero", UMB + ["--mbar-samples", "0"], ["--mbar-samples", "positive", "0"]),
    ("umbrella-export-negative", UMB + ["--export", "-3", "--save-positions"], ["--export", "-3", ">= 0"]),
    ("umbrella-export-without-positions", UMB + ["--export", "10"], ["--export", "--save-positions"]),
    ("umbrella-unknown-platform", UMB + ["--platform", "Quantum"], ["--platform", "quantum", "reference"]),
    ("umbrella-unknown-dihedral", UMB + ["--dihedrals", "omega"], ["omega", "phi"]),
    # metadynamics
    ("metadynamics-bias-factor-one", META + ["--bias-factor", "1"], ["--bias-factor", "> 1", "1"]),
    ("metadynamics-ps-zero", META + ["--ps", "0"], ["--ps", "positive", "0"]),
    ("metadynamics-ps-not-whole-chunks", META + ["--ps", "0.015"], ["--ps", "0.015", "multiple of 10 steps"]),
    ("metadynamics-hydrogen-mass", META + ["--hydrogen-mass", "9"], ["--hydrogen-mass", "between 1 and 5", "9"]),
    ("metadynamics-four-dihedrals", META + ["--dihedrals", "phi", "psi", "phi", "psi"], ["--dihedrals", "1 to 3", "4"]),
    ("metadynamics-unknown-dihedral", META + ["--dihedrals", "omega"], ["omega", "phi"]),
    ("metadynamics-pool-missing", META + ["--pool", "{missing}"], ["--pool", "missing", "no metadynamics run"]),
    ("metadynamics-bad-state", META + ["--state", "x=phi9 > 0"], ["phi9"]),
    # demo
    ("demo-minutes-zero", ["demo", "--minutes", "0", "--output", "{tmp}/demo"], ["--minutes", "positive", "0"]),
    ("demo-minutes-nan", ["demo", "--minutes", "nan", "--output", "{tmp}/demo"], ["--minutes", "positive", "nan"]),
    ("demo-output-is-file", ["demo", "--output", "{pdb}"], ["--output", "top.pdb", "folder"]),
]


ROW_TIME_LIMIT_S = 30  # a refused input is refused at once; a row that runs is a missing check


@pytest.fixture
def time_limit():
    """Stop a row that computes instead of refusing (SIGALRM after ROW_TIME_LIMIT_S)."""
    import signal

    def stop(signum, frame):
        raise TimeoutError(f"ran for {ROW_TIME_LIMIT_S} s instead of refusing the input")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(ROW_TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _fill(argv, paths):
    return [a.format(**paths) for a in argv]


def _check_words(message, words, case):
    low = message.lower()
    missing = [w for w in words if w.lower() not in low]
    assert not missing, f"{case}: the message lacks {missing}:\n{message}"


@pytest.mark.parametrize("argv, words", [pytest.param(a, w, id=i) for i, a, w in CLI_ROWS])
def test_command_line(fx, capsys, time_limit, argv, words, request):
    from openmm_arbg.cli import main

    code = main(_fill(argv, fx.paths))
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert last.startswith("arbg ") and ": error: " in last, err
    _check_words(last, words, request.node.callspec.id)


def test_tiny_umbrella_run_that_mbar_cannot_solve_gives_a_message(fx, capsys):
    """Two 20-step windows per dihedral: pymbar cannot bound the free energies (its BAR
    initialisation fails); the command says so and what to do, without a traceback."""
    from openmm_arbg.cli import main

    out = os.path.join(fx.tmp, "umb_tiny")
    code = main(_fill(UMB, fx.paths)[:-3] + ["--output", out, "--platform", "Reference", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    _check_words(err.strip().splitlines()[-1], ["mbar", "windows", "--ps", "--windows"], "umbrella-mbar-fails")


# ---------------------------------------------------------------------------- functions and classes
def _system_copy(ms):
    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ms.system))


def _with_constraint(fx):
    s = _system_copy(fx.ms)
    s.addConstraint(1, 0, 0.109)
    return s


def _with_external_force(fx):
    s = _system_copy(fx.ms)
    f = openmm.CustomExternalForce("x^2")
    f.addParticle(0, [])
    s.addForce(f)
    return s


def _periodic(fx):
    s = _system_copy(fx.ms)
    s.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
    for f in s.getForces():
        if isinstance(f, openmm.NonbondedForce):
            f.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    return s


def _other_molecule(fx):
    from openmm_arbg.simulation.testsystems import harmonic_chain

    ms, _ = harmonic_chain(fx.ms.n_atoms)
    return ms.system


def _importance(fx, system, **kwargs):
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.sampling.importance import importance_sample

    with ReducedPotential(system, temperature=300.0) as u:
        importance_sample(fx.model, u, kwargs.pop("n", 4), **kwargs)


def _u(fx, **kwargs):
    from openmm_arbg.sampling.energies import ReducedPotential

    return ReducedPotential(fx.ms.system, **dict(dict(temperature=300.0), **kwargs))


def _move(fx, **kwargs):
    from openmm_arbg import ArBGMove

    return ArBGMove(fx.model, **kwargs)


def _apply(fx, system=None, temperature=300.0):
    from openmmtools import cache
    from openmmtools.states import SamplerState, ThermodynamicState

    move = _move(fx, n_attempts=1, buffer_size=2)
    state = ThermodynamicState(system or _system_copy(fx.ms), temperature * unit.kelvin)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    move.apply(state, SamplerState(fx.ms.positions), context_cache=context_cache)


def _run_md(fx, **kwargs):
    from openmm_arbg.simulation.md import run_md

    args = dict(n_steps=20, report_interval=10, equilibration_steps=0, progress=False, platform="Reference")
    args.update(kwargs)
    run_md(fx.ms, os.path.join(fx.tmp, "run_md_" + "_".join(kwargs)), **args)


def _run_umbrella(fx, **kwargs):
    from openmm_arbg.analysis.observables import dihedral_indices
    from openmm_arbg.simulation.umbrella import dihedral_grid, run_umbrella

    args = dict(dihedrals=dihedral_indices(fx.ms.topology, ["phi", "psi"]), centres=dihedral_grid(2, 2), n_steps=20,
                report_interval=10, equilibration_steps=0, progress=False, platform="Reference")
    args.update(kwargs)
    run_umbrella(fx.ms, output_dir=os.path.join(fx.tmp, "run_umbrella_" + "_".join(kwargs)), **args)


def _smc(fx, system=None, **kwargs):
    from openmm_arbg.sampling.energies import ReducedPotential
    from openmm_arbg.sampling.smc import smc_sample

    args = dict(n=4, stages=[30])
    args.update(kwargs)
    with ReducedPotential(system or fx.ms.system, temperature=300.0) as u:
        smc_sample(fx.model, u, **args)


def _profile(fx, **kwargs):
    from openmm_arbg.sampling.control import dihedral_profile

    with _u(fx) as u:
        dihedral_profile(fx.model, u, **dict(dict(dihedrals=["phi"], n_grid=4, n_per_point=4), **kwargs))


def _coordinate_profile(fx, **kwargs):
    from openmm_arbg.sampling.control import coordinate_free_energy

    with _u(fx) as u:
        coordinate_free_energy(fx.model, u, **dict(dict(index=10, values=[0.0, 1.0], n_per_value=4), **kwargs))


def _trainer(fx, positions=None, **config):
    from openmm_arbg.training import Trainer

    base = dict(n_steps=2, batch_size=8, eval_interval=1, checkpoint_interval=1)
    Trainer(fx.model, fx.x if positions is None else positions, dict(base, **config), output_dir=os.path.join(fx.tmp, "trainer"),
            resume=False, progress=False)


def _populations(fx, states, positions=None, log_weights=None):
    from openmm_arbg.analysis.states import state_populations

    state_populations(states, fx.x if positions is None else positions, fx.model.topology, log_weights)


def _from_data(fx, positions=None, **kwargs):
    from openmm_arbg import ArBG

    ArBG.from_data(fx.ms.topology, fx.x if positions is None else positions, **dict(dict(n_bins=16, network=TINY_NETWORK), **kwargs))


def _load_trajectories(fx, path, topology=None, stride=1):
    from openmm_arbg.training import load_trajectories

    load_trajectories([path], topology or fx.pdb, stride=stride)


def _swapped_graph(fx):
    """The molecule of the PDB with two atoms in another order, as a model's graph."""
    import mdtraj

    from openmm_arbg.molecule.topology import MolecularGraph

    return MolecularGraph.from_topology(mdtraj.load_topology(fx.swapped))


ANGSTROM = 10.0
NAN_FRAME = np.full((22, 3), np.nan)

# id, call(fx), exception, words
API_ROWS = [
    # ArBG.from_data
    ("from_data-angstrom", lambda fx: _from_data(fx, fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("from_data-nan-positions", lambda fx: _from_data(fx, np.concatenate([fx.x, NAN_FRAME[None]])), ValueError, ["nan", f"frame {N_FRAMES}"]),
    ("from_data-wrong-atom-count", lambda fx: _from_data(fx, fx.x[:, :20]), ValueError, ["20 atoms", "22"]),
    ("from_data-no-frames", lambda fx: _from_data(fx, fx.x[:0]), ValueError, ["training positions", "no frames"]),
    ("from_data-n-bins-one", lambda fx: _from_data(fx, n_bins=1), ValueError, ["n_bins", ">= 2", "1"]),
    ("from_data-margin-negative", lambda fx: _from_data(fx, margin=-0.5), ValueError, ["margin", ">= 0", "-0.5"]),
    ("from_data-unknown-representation", lambda fx: _from_data(fx, representation="polar"), ValueError, ["representation", "polar", "internal"]),
    ("from_data-unknown-first-torsion", lambda fx: _from_data(fx, first_torsions=["omega"]), ValueError, ["omega", "phi"]),
    # ArBG.load
    ("load-missing", lambda fx: _load(fx.missing + ".safetensors"), FileNotFoundError, ["missing.safetensors", "no checkpoint"]),
    ("load-nan-weights", lambda fx: _load(fx.nan_model), ValueError, ["nan.safetensors", "nan", "weights"]),
    ("load-cut-metadata", lambda fx: _load(fx.bad_meta), ValueError, ["bad_meta.safetensors", "metadata", "corrupt"]),
    ("load-metadata-lacks-bins", lambda fx: _load(fx.no_bins), ValueError, ["no_bins.safetensors", "corrupt", "discretizer"]),
    ("load-not-safetensors", lambda fx: _load(fx.text_model), ValueError, ["text.safetensors", "not a readable"]),
    ("load-other-molecule-topology", lambda fx: _load(fx.model_path, topology=_swapped_graph(fx).to_mdtraj()), ValueError, ["another molecule", "atom 7"]),
    # ArBG.sample
    ("sample-n-negative", lambda fx: fx.model.sample(-1), ValueError, ["n", ">= 0", "-1"]),
    ("sample-n-nan", lambda fx: fx.model.sample(float("nan")), ValueError, ["n", "nan"]),
    ("sample-batch-size-zero", lambda fx: fx.model.sample(4, batch_size=0), ValueError, ["batch_size", "positive", "0"]),
    ("sample-proposal-temperature-zero", lambda fx: fx.model.sample(4, proposal_temperature=0.0), ValueError, ["proposal_temperature", "positive", "0"]),
    ("sample-proposal-temperature-nan", lambda fx: fx.model.sample(4, proposal_temperature=float("nan")), ValueError, ["proposal_temperature", "nan"]),
    ("sample-prefix-too-long", lambda fx: fx.model.sample(4, prefix=np.zeros(100)), ValueError, ["prefix", "100", "60"]),
    # ArBG.log_prob and other functions of positions
    ("log_prob-angstrom", lambda fx: fx.model.log_prob(fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("log_prob-tenth-of-nm", lambda fx: fx.model.log_prob(fx.x / 10), ValueError, ["median bond length", "not a length in nm"]),
    ("log_prob-angstrom-one-frame", lambda fx: fx.model.log_prob(fx.x[0] * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("log_prob-nan", lambda fx: fx.model.log_prob(NAN_FRAME), ValueError, ["nan", "frame 0"]),
    ("log_prob-wrong-atom-count", lambda fx: fx.model.log_prob(fx.x[:, :21]), ValueError, ["21 atoms", "22"]),
    ("log_prob-wrong-shape", lambda fx: fx.model.log_prob(fx.x[..., :2]), ValueError, ["shape", "(n_atoms, 3)"]),
    ("log_prob-proposal-temperature-negative", lambda fx: fx.model.log_prob(fx.x, proposal_temperature=-1.0), ValueError, ["proposal_temperature", "positive", "-1"]),
    ("log_prob-start-out-of-range", lambda fx: fx.model.log_prob(fx.x, start=99), ValueError, ["start", "99", "60"]),
    ("log_prob-batch-size-zero", lambda fx: fx.model.log_prob(fx.x, batch_size=0), ValueError, ["batch_size", "positive", "0"]),
    ("log_prob_prefix-angstrom", lambda fx: fx.model.log_prob_prefix(fx.x * ANGSTROM, 5), ValueError, ["angstrom", "divide by 10"]),
    ("check_stereo-angstrom", lambda fx: fx.model.check_stereo(fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("proposal-log_prob-angstrom", lambda fx: _move(fx).proposal.log_prob(fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("reduced-potential-angstrom", lambda fx: _u(fx)(fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    # ArBGMove
    ("move-buffer-size-zero", lambda fx: _move(fx, buffer_size=0), ValueError, ["buffer_size", "positive", "0"]),
    ("move-n-attempts-zero", lambda fx: _move(fx, n_attempts=0), ValueError, ["n_attempts", "positive", "0"]),
    ("move-proposal-temperature-zero", lambda fx: _move(fx, proposal_temperature=0.0), ValueError, ["proposal_temperature", "positive", "0"]),
    ("move-cut-out-of-range", lambda fx: _move(fx, cuts=[0, 99]), ValueError, ["cuts", "[0, 60)", "99"]),
    ("move-cut-probabilities", lambda fx: _move(fx, cuts=[0, 5], cut_probabilities=[0.5, 0.6]), ValueError, ["cut_probabilities", "summing to 1"]),
    ("move-unsaved-model", lambda fx: _move_unsaved(fx), ValueError, ["saved", "model.save"]),
    ("move-missing-file", lambda fx: _move_path(fx.missing + ".safetensors"), FileNotFoundError, ["missing.safetensors", "not found"]),
    ("move-apply-zero-kelvin", lambda fx: _apply(fx, temperature=0.0), ValueError, ["temperature", "positive", "0"]),
    ("move-apply-constraints", lambda fx: _apply(fx, system=_with_constraint(fx)), ValueError, ["1 holonomic constraints", "constraints=none"]),
    ("move-apply-external-force", lambda fx: _apply(fx, system=_with_external_force(fx)), ValueError, ["customexternalforce", "rigid"]),
    ("move-apply-periodic", lambda fx: _apply(fx, system=_periodic(fx)), ValueError, ["periodic", "nocutoff"]),
    ("move-apply-other-molecule", lambda fx: _apply(fx, system=_other_molecule(fx)), ValueError, ["particle 0", "another molecule"]),
    # importance_sample and ReducedPotential
    ("importance-constraints", lambda fx: _importance(fx, _with_constraint(fx)), ValueError, ["1 holonomic constraints", "constraints=none"]),
    ("importance-external-force", lambda fx: _importance(fx, _with_external_force(fx)), ValueError, ["customexternalforce", "rigid"]),
    ("importance-periodic", lambda fx: _importance(fx, _periodic(fx)), ValueError, ["periodic", "box"]),
    ("importance-other-molecule", lambda fx: _importance(fx, _other_molecule(fx)), ValueError, ["particle 0", "another molecule"]),
    ("importance-n-negative", lambda fx: _importance(fx, fx.ms.system, n=-3), ValueError, ["n", ">= 0", "-3"]),
    ("importance-proposal-temperature-zero", lambda fx: _importance(fx, fx.ms.system, proposal_temperature=0.0), ValueError, ["proposal_temperature", "positive"]),
    ("reduced-potential-no-temperature", lambda fx: _u(fx, temperature=None), ValueError, ["temperature", "thermodynamicstate"]),
    ("reduced-potential-zero-kelvin", lambda fx: _u(fx, temperature=0.0), ValueError, ["temperature", "positive", "0"]),
    ("reduced-potential-nan-kelvin", lambda fx: _u(fx, temperature=float("nan")), ValueError, ["temperature", "positive", "nan"]),
    ("reduced-potential-workers-zero", lambda fx: _u(fx, n_workers=0), ValueError, ["n_workers", "positive", "0"]),
    ("reduced-potential-unknown-platform", lambda fx: _u(fx, platform="Quantum"), ValueError, ["platform", "quantum", "reference"]),
    ("reduced-potential-wrong-shape", lambda fx: _u(fx)(fx.x[:, :21]), ValueError, ["shape", "22"]),
    # TrainingConfig and Trainer
    ("config-n-steps-zero", lambda fx: _training_config(n_steps=0), ValueError, ["n_steps", ">= 1", "0"]),
    ("config-batch-size-float", lambda fx: _training_config(batch_size=2.5), ValueError, ["batch_size", "integer", "2.5"]),
    ("config-learning-rate-nan", lambda fx: _training_config(learning_rate=float("nan")), ValueError, ["learning_rate", "nan"]),
    ("config-learning-rate-zero", lambda fx: _training_config(learning_rate=0.0), ValueError, ["learning_rate", "(0,", "0"]),
    ("config-validation-fraction-one", lambda fx: _training_config(validation_fraction=1.0), ValueError, ["validation_fraction", "[0, 1)", "1"]),
    ("config-time-budget-negative", lambda fx: _training_config(time_budget_s=-1.0), ValueError, ["time_budget_s", "-1"]),
    ("config-unknown-key", lambda fx: _training_config_dict(dict(n_step=5)), ValueError, ["unknown training settings", "n_step", "n_steps"]),
    ("config-wrong-type", lambda fx: _training_config_dict(dict(n_steps="many")), ValueError, ["n_steps", "integer", "many"]),
    ("trainer-angstrom", lambda fx: _trainer(fx, fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("trainer-batch-larger-than-data", lambda fx: _trainer(fx, batch_size=1000), ValueError, ["fewer than one batch", "1000"]),
    ("trainer-unknown-key", lambda fx: _trainer(fx, n_step=5), ValueError, ["unknown training settings", "n_step"]),
    ("load_trajectories-swapped", lambda fx: _load_trajectories(fx, fx.dcd, fx.swapped), ValueError, ["swapped.pdb", "bond", "atom order"]),
    ("load_trajectories-truncated", lambda fx: _load_trajectories(fx, fx.trunc), ValueError, ["trunc.dcd", "truncated", f"{N_FRAMES} frames"]),
    ("load_trajectories-stride-zero", lambda fx: _load_trajectories(fx, fx.dcd, stride=0), ValueError, ["stride", "positive", "0"]),
    # run_md
    ("run_md-n-steps-zero", lambda fx: _run_md(fx, n_steps=0), ValueError, ["n_steps", "positive", "0"]),
    ("run_md-not-a-multiple", lambda fx: _run_md(fx, n_steps=25), ValueError, ["n_steps", "multiple", "report_interval"]),
    ("run_md-zero-kelvin", lambda fx: _run_md(fx, temperature=0.0), ValueError, ["temperature", "positive", "0"]),
    ("run_md-nan-kelvin", lambda fx: _run_md(fx, temperature=float("nan")), ValueError, ["temperature", "positive", "nan"]),
    ("run_md-timestep-zero", lambda fx: _run_md(fx, timestep_fs=0.0), ValueError, ["timestep_fs", "positive", "0"]),
    ("run_md-friction-negative", lambda fx: _run_md(fx, friction_per_ps=-1.0), ValueError, ["friction_per_ps", ">= 0", "-1"]),
    ("run_md-equilibration-negative", lambda fx: _run_md(fx, equilibration_steps=-5), ValueError, ["equilibration_steps", ">= 0", "-5"]),
    ("run_md-chunk-frames-zero", lambda fx: _run_md(fx, chunk_frames=0), ValueError, ["chunk_frames", "positive", "0"]),
    ("run_md-unknown-platform", lambda fx: _run_md(fx, platform="Quantum"), ValueError, ["platform", "quantum", "reference"]),
    ("run_md-constraints", lambda fx: _run_md_constrained(fx), ValueError, ["unconstrained", "constraints=none"]),
    # run_umbrella
    ("run_umbrella-k-zero", lambda fx: _run_umbrella(fx, k=0.0), ValueError, ["k", "positive", "0"]),
    ("run_umbrella-zero-kelvin", lambda fx: _run_umbrella(fx, temperature=0.0), ValueError, ["temperature", "positive", "0"]),
    ("run_umbrella-workers-zero", lambda fx: _run_umbrella(fx, n_workers=0), ValueError, ["n_workers", "positive", "0"]),
    ("run_umbrella-centres-shape", lambda fx: _run_umbrella(fx, centres=np.zeros(3)), ValueError, ["centres", "2 dihedrals", "(3,)"]),
    ("run_umbrella-atom-out-of-range", lambda fx: _run_umbrella(fx, dihedrals=[[0, 1, 2, 99]]), ValueError, ["dihedrals", "99", "22 atoms"]),
    ("run_umbrella-mbar-samples-zero", lambda fx: _run_umbrella(fx, max_samples_per_window=0), ValueError, ["max_samples_per_window", "positive", "0"]),
    ("run_umbrella-unknown-platform", lambda fx: _run_umbrella(fx, platform="Quantum"), ValueError, ["platform", "quantum", "reference"]),
    # smc_sample
    ("smc-n-zero", lambda fx: _smc(fx, n=0), ValueError, ["n", "positive", "0"]),
    ("smc-stage-out-of-range", lambda fx: _smc(fx, stages=[0]), ValueError, ["stages", "(0, 60)"]),
    ("smc-lambdas-length", lambda fx: _smc(fx, lambdas=[0.1, 0.2]), ValueError, ["lambda", "stage"]),
    ("smc-lambda-negative", lambda fx: _smc(fx, lambdas=[-1.0]), ValueError, ["lambdas", ">= 0", "-1"]),
    ("smc-ess-threshold", lambda fx: _smc(fx, ess_threshold=2.0), ValueError, ["ess_threshold", "(0, 1]", "2"]),
    ("smc-constraints", lambda fx: _smc(fx, system=_with_constraint(fx)), ValueError, ["holonomic constraints"]),
    # dihedral_profile and coordinate_free_energy (only called)
    ("profile-three-dihedrals", lambda fx: _profile(fx, dihedrals=["phi", "psi", "phi"]), ValueError, ["one or two", "3"]),
    ("profile-not-a-model-coordinate", lambda fx: _profile(fx), ValueError, ["phi", "not a coordinate", "first_torsions"]),
    ("profile-subdivisions-zero", lambda fx: _profile(fx, subdivisions=0), ValueError, ["subdivisions", ">= 1", "0"]),
    ("coordinate-index-out-of-range", lambda fx: _coordinate_profile(fx, index=99), ValueError, ["99", "60"]),
    ("coordinate-n-per-value-zero", lambda fx: _coordinate_profile(fx, n_per_value=0), ValueError, ["n_per_value", "0"]),
    # state_populations
    ("states-unknown-name", lambda fx: _populations(fx, {"a": "phi9 > 0"}), ValueError, ["phi9", "phi2"]),
    ("states-syntax", lambda fx: _populations(fx, {"a": "phi2 >> 0"}), ValueError, ["phi2 >> 0"]),
    ("states-unknown-variable", lambda fx: _populations(fx, {"a": "chi2 > 0"}), ValueError, ["chi2", "phi2"]),
    ("states-weights-length", lambda fx: _populations(fx, {"a": "phi2 > 0"}, log_weights=np.zeros(3)), ValueError, ["log_weights", "3", f"{N_FRAMES}"]),
    ("states-angstrom-distance", lambda fx: _populations(fx, {"a": "d(1, 4) < 0.3"}, positions=fx.x * ANGSTROM), ValueError, ["angstrom", "divide by 10"]),
    ("states-wrong-atom-count", lambda fx: _populations(fx, {"a": "phi2 > 0"}, positions=fx.x[:, :21]), ValueError, ["21 atoms", "22"]),
]


def _load(path, **kwargs):
    from openmm_arbg import ArBG

    return ArBG.load(path, **kwargs)


def _move_unsaved(fx):
    from openmm_arbg import ArBG, ArBGMove

    model = ArBG.from_data(fx.ms.topology, fx.x, n_bins=16, network=TINY_NETWORK)
    ArBGMove(model)


def _move_path(path):
    from openmm_arbg import ArBGMove

    ArBGMove(path)


def _training_config(**kwargs):
    from openmm_arbg.training import TrainingConfig

    TrainingConfig(**kwargs)


def _training_config_dict(d):
    from openmm_arbg.training import TrainingConfig

    TrainingConfig.from_dict(d)


def _run_md_constrained(fx):
    from openmm_arbg.simulation.md import run_md
    from openmm_arbg.simulation.systems import MolecularSystem

    ms = MolecularSystem("constrained", _with_constraint(fx), fx.ms.topology, fx.ms.positions, fx.ms.temperature)
    run_md(ms, os.path.join(fx.tmp, "run_md_constrained"), n_steps=20, report_interval=10, progress=False, platform="Reference")


@pytest.mark.parametrize("call, error, words", [pytest.param(c, e, w, id=i) for i, c, e, w in API_ROWS])
def test_function(fx, time_limit, call, error, words, request):
    with pytest.raises(error) as info:
        call(fx)
    _check_words(str(info.value), words, request.node.callspec.id)


def test_every_command_has_rows():
    from openmm_arbg.cli import COMMANDS

    covered = {argv[0] for _, argv, _ in CLI_ROWS}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered
