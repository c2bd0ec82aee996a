"""A System whose energy comes from an openmm-torch TorchForce is an exact target.

openmm-torch's CPU build needs torch < 2.13, so this runs in the second environment
``.venv-openmm-torch`` (``bash devtools/setup_openmm_torch_env.sh``; ``devtools/run_tests.sh``
creates it). Skipped when that environment is absent. The chain's torsion energy is moved into a
TorchScript module; importance sampling must reproduce the analytic log Z and ArBGMove the
analytic mean of cos(3 phi).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("ARBG_OPENMM_TORCH_PYTHON", str(ROOT / ".venv-openmm-torch" / "bin" / "python"))

SCRIPT = r'''
import copy, json, math, sys
import numpy as np, torch, openmm, openmm.unit as unit, openmmtorch, mdtraj
from openmmtools import cache, states
from pymbar import timeseries
from openmm_arbg import ArBG, ArBGMove
from openmm_arbg.sampling.energies import ReducedPotential
from openmm_arbg.sampling.importance import importance_sample
from openmm_arbg.simulation.md import run_md
from openmm_arbg.simulation.testsystems import harmonic_chain

class Torsion(torch.nn.Module):
    def __init__(self, k: float):
        super().__init__()
        self.k = k
    def forward(self, positions):
        x = positions.to(torch.float64)
        b0 = x[0] - x[1]
        b1 = x[2] - x[1]
        b2 = x[3] - x[2]
        b1 = b1 / torch.linalg.norm(b1)
        v = b0 - (b0 @ b1) * b1
        w = b2 - (b2 @ b1) * b1
        phi = torch.atan2(torch.linalg.cross(b1, v) @ w, v @ w)
        return self.k * (1 + torch.cos(3 * phi))

out = sys.argv[1]
torch.set_num_threads(1)
ms, analytic = harmonic_chain(4)
torch.jit.script(Torsion(analytic.k_torsion)).save(out + "/torsion.pt")
system = copy.deepcopy(ms.system)
for i in reversed(range(system.getNumForces())):
    if isinstance(system.getForce(i), openmm.PeriodicTorsionForce):
        system.removeForce(i)
system.addForce(openmmtorch.TorchForce(out + "/torsion.pt"))
frames = run_md(ms, out + "/md", n_steps=50_000, report_interval=50, equilibration_steps=500, progress=False)
ArBG.from_data(ms.topology, frames.xyz, n_bins=32, network=dict(n_layer=1, n_head=2, d_model=32), seed=1).save(out + "/m.safetensors")
model = ArBG.load(out + "/m.safetensors")
res = importance_sample(model, ReducedPotential(system, temperature=300.0, platform="Reference"), 6000, seed=4)
log_z, log_z_err = res.log_partition_function()
np.random.seed(2)
move = ArBGMove(out + "/m.safetensors", n_attempts=200, buffer_size=2000)
thermo = states.ThermodynamicState(system, 300 * unit.kelvin)
ss = states.SamplerState(ms.positions)
cc = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
xs = []
for _ in range(60):
    move.apply(thermo, ss, cc)
    xs.append(ss.positions.value_in_unit(unit.nanometer))
traj = mdtraj.Trajectory(np.array(xs, dtype=np.float32), mdtraj.Topology.from_openmm(ms.topology))
c3 = np.cos(3 * mdtraj.compute_dihedrals(traj, [[0, 1, 2, 3]])[:, 0].astype(float))
g = timeseries.statistical_inefficiency(c3)
print("RESULT " + json.dumps(dict(
    log_z=log_z, log_z_err=log_z_err, exact_log_z=analytic.log_partition_function(300.0),
    c3=float(c3.mean()), c3_err=float(c3.std(ddof=1) * math.sqrt(g / len(c3))),
    exact_c3=analytic.expectation("torsion", lambda p: np.cos(3 * p)),
    accepted=move.n_accepted, torch=torch.__version__)))
'''


@pytest.mark.skipif(not Path(PYTHON).exists(), reason="no openmm-torch environment (bash devtools/setup_openmm_torch_env.sh)")
def test_torchforce_target_is_sampled_exactly(tmp_path):
    script = tmp_path / "torchforce.py"
    script.write_text(SCRIPT)
    out = subprocess.run([PYTHON, str(script), str(tmp_path)], capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-4000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT ") :])
    assert r["accepted"] > 50
    assert abs(r["log_z"] - r["exact_log_z"]) < 4.5 * r["log_z_err"], r
    assert abs(r["c3"] - r["exact_c3"]) < 4.5 * r["c3_err"], r
