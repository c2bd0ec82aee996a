"""The demo's pipeline end to end at a tiny size (the real run is `arbg demo`)."""

import math

from openmm_arbg.demo import run_demo
from openmm_arbg.pretrained import load_reference


def test_shipped_reference_is_consistent():
    ref = load_reference()
    p = ref["phi>0"]["probability"]
    assert 0 < p < 0.1 and ref["phi>0"]["probability_error"] > 0
    assert math.isclose(ref["phi>0"]["free_energy_kT"], -math.log(p / (1 - p)), rel_tol=1e-9)
    assert math.isclose(sum(ref[b]["probability"] for b in ("beta", "alpha_R", "phi>0")), 1.0, abs_tol=1e-6)
    assert ref["command"].startswith("arbg umbrella")


def test_demo_writes_report(tmp_path):
    report = run_demo(str(tmp_path / "demo"), minutes=0.05, quiet=True, md_ns=0.02, n_proposals=300, mcmc_iterations=10)
    assert (tmp_path / "demo" / "report.md").read_text() == report
    for heading in ("## 1. Langevin MD", "## 3. Importance sampling", "## Basin populations", "## Free energy of phi > 0"):
        assert heading in report
    assert "umbrella sampling" in report and "ArBGMove + Langevin, 500 evaluations" in report
    assert (tmp_path / "demo" / "ramachandran.png").stat().st_size > 1000
