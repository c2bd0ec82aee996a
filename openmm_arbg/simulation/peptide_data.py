"""Training MD for many capped peptides at once: one resumable :func:`~openmm_arbg.simulation.md.run_md`
per sequence, in worker processes (the data of a transferable model, ``arbg peptide-md``).

Each sequence's run goes to ``OUTPUT/md_SEQUENCE/<T>K/`` (``trajectory.dcd``, ``topology.pdb``),
the layout of ``arbg md``, so ``arbg train-transferable --md OUTPUT/md_*`` reads them. Running the
same call again resumes every run where it stopped (finished runs are read back, not redone);
other settings for an existing run are refused by ``run_md``. Each worker uses one thread.
"""

import os

__all__ = ["generate_peptide_md", "peptide_md_folder"]


def peptide_md_folder(output_dir, sequence):
    """Folder of one sequence's runs."""
    return os.path.join(os.fspath(output_dir), f"md_{sequence}")


def _one(job):
    """Worker: one sequence's MD; returns (sequence, frames, trajectory path)."""
    sequence, output_dir, settings = job
    os.environ.setdefault("OPENMM_CPU_THREADS", "1")
    from ..simulation.md import run_md, steps_from_ps
    from ..simulation.systems import capped_peptide

    ms = capped_peptide(sequence, temperature=settings["temperature"])
    n_steps, report = steps_from_ps(settings["ns"] * 1e3, settings["report_ps"], settings["timestep_fs"], f"--ns {settings['ns']}")
    starts = None
    if settings["n_starts"]:
        from ..simulation.md import basin_starts

        starts = basin_starts(ms.positions_nm(), ms.topology, settings["n_starts"], seed=settings["seed"])[0]
    out = os.path.join(peptide_md_folder(output_dir, sequence), f"{settings['temperature']:g}K")
    traj = run_md(ms, out, n_steps=n_steps, report_interval=report, temperature=settings["temperature"],
                  timestep_fs=settings["timestep_fs"], seed=settings["seed"], platform=settings["platform"],
                  equilibration_steps=int(round(settings["equilibration_ps"] * 1e3 / settings["timestep_fs"])),
                  progress=False, start_positions=starts, out=open(os.devnull, "w"))
    return sequence, int(traj.n_frames), os.path.join(out, "trajectory.dcd")


def generate_peptide_md(sequences, output_dir, ns=0.1, report_ps=0.25, temperature=310.0, timestep_fs=1.0,
                        equilibration_ps=10.0, seed=0, platform=None, basin_starts=0, workers=1, progress=True):
    """MD of the capped peptide Ace-``s``-Nme (amber14 + OBC1, unconstrained) for every sequence.

    Parameters
    ----------
    sequences : list of str
        One-letter sequences (each built by :func:`~openmm_arbg.simulation.peptides.build_capped_peptide`).
    output_dir : str
    ns, report_ps, temperature, timestep_fs, equilibration_ps
        Simulated time per sequence (ns), time between frames (ps), K, fs, ps.
    seed : int
    platform : str, optional
        OpenMM platform (default: chosen by a speed test per system).
    basin_starts : int
        If > 0, seeded MD from that many starts with every residue's (phi, psi) rotated into the
        Ramachandran basins in turn (:func:`~openmm_arbg.simulation.md.basin_starts`), so the data
        cover basins plain MD of this length would miss.
    workers : int
        Worker processes (one sequence each at a time, one thread each).
    progress : bool

    Returns
    -------
    dict
        sequence -> (frames, trajectory path), in the order of ``sequences``.
    """
    import concurrent.futures
    import multiprocessing

    from ..simulation.peptides import ONE_LETTER
    from ..utils import progress_bar

    sequences = [str(s).upper() for s in sequences]
    bad = [s for s in sequences if not s or set(s) - set(ONE_LETTER)]
    if bad:
        letters = sorted(set("".join(bad)) - set(ONE_LETTER))
        raise ValueError(f"sequences must be one-letter codes of the 20 standard amino acids, separated by spaces; got "
                         f"{bad} (not amino acids: {' '.join(letters)})")
    if len(set(sequences)) != len(sequences):
        raise ValueError(f"a sequence is listed twice: {sorted(s for s in set(sequences) if sequences.count(s) > 1)}")
    if int(workers) < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    settings = dict(ns=float(ns), report_ps=float(report_ps), temperature=float(temperature), timestep_fs=float(timestep_fs),
                    equilibration_ps=float(equilibration_ps), seed=int(seed), platform=platform, n_starts=int(basin_starts))
    from ..simulation.md import steps_from_ps

    n_steps, report = steps_from_ps(settings["ns"] * 1e3, settings["report_ps"], settings["timestep_fs"], f"--ns {ns}")
    if basin_starts and (n_steps // report) % int(basin_starts):
        raise ValueError(f"seeded MD splits each run's {n_steps // report} frames evenly over {basin_starts} starts: choose "
                         "ns, report_ps and the number of starts so that the frame count is a multiple of it")
    jobs = [(s, os.fspath(output_dir), settings) for s in sequences]
    results = {}
    bar = progress_bar(total=len(jobs), desc="peptide MD", unit="peptide", disable=not progress)
    if int(workers) == 1:
        for job in jobs:
            s, n, path = _one(job)
            results[s] = (n, path)
            bar.update(1)
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(int(workers), mp_context=ctx) as pool:
            for s, n, path in pool.map(_one, jobs):
                results[s] = (n, path)
                bar.update(1)
    bar.close()
    return {s: results[s] for s in sequences}
