"""Results streamed to disk in chunks, resumable: what ``arbg mcmc`` and ``arbg sample`` write as
they go.

A result file ``OUTPUT`` (e.g. ``chain.dcd``) has a progress folder ``OUTPUT.progress/`` beside it::

    progress.json        the run's settings, how far it got, and (when complete) the SHA-256 of OUTPUT
    chunk_000000.npz     one file per completed chunk, written atomically (temporary file + rename)
    result.npz           per-item arrays kept after completion (e.g. log weights); chunks are removed

A chunk file exists only if the chunk was complete, so a run killed at any point (even SIGKILL)
loses at most the chunk in progress. Rerunning with the same settings resumes after the last
complete chunk; other settings are refused with the names and values of those that changed; a
file at OUTPUT that this tool did not write (no matching SHA-256 in ``progress.json``) is never
overwritten.
"""

import glob
import os
import sys

import numpy as np

from ..utils import atomic_write, check_output_file, check_settings_file, file_sha256, load_trajectory, write_json_atomic

__all__ = ["ChunkStore", "RunInterrupted", "TRAJECTORY_EXTENSIONS", "chunk_seed", "load_weighed_proposals", "sample_to_file"]

# the extensions mdtraj.Trajectory.save writes
TRAJECTORY_EXTENSIONS = (".dcd", ".xtc", ".trr", ".h5", ".hdf5", ".nc", ".netcdf", ".ncdf", ".pdb", ".pdb.gz", ".binpos",
                         ".lh5", ".lammpstrj", ".xyz", ".xyz.gz", ".gro", ".rst7", ".ncrst", ".tng", ".crd", ".mdcrd")


def chunk_seed(seed, chunk):
    """The seed of chunk ``chunk`` of a run seeded with ``seed``: ``seed`` itself for chunk 0 (so
    short runs draw what they always drew), a ``numpy.random.SeedSequence`` child value after."""
    if chunk == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, int(chunk)]).generate_state(1)[0])


class RunInterrupted(Exception):
    """A streamed run stopped at a chunk boundary on SIGINT/SIGTERM; everything done is saved.

    Attributes: ``output``, ``folder``, ``done`` and ``total`` (items), ``signal``."""

    def __init__(self, store, done, total, signal_name, unit):
        self.output, self.folder, self.done, self.total, self.signal = store.output, store.folder, done, total, signal_name
        super().__init__(
            f"stopped by {signal_name} after {done} of {total} {unit}; the completed chunks are in {store.folder}. "
            f"Run the same command again to resume."
        )


class ChunkStore:
    """The progress folder of a result file (see the module docstring).

    Parameters
    ----------
    output : str
        The result file; checked at once (:func:`~openmm_arbg.utils.check_output_file`).
    settings : dict
        JSON-able settings; a rerun with others is refused.
    what : str
        What the run is, for messages ("an MCMC chain").
    option : str
        The option that named ``output``, for messages.
    out : file
        Where notices go (default stdout).

    After construction, ``complete`` says whether OUTPUT is already the finished result of these
    settings, and ``n_done`` how many chunks are saved (consecutive from 0, each one loadable).
    """

    def __init__(self, output, settings, what="a run", option="--output", extensions=TRAJECTORY_EXTENSIONS, out=None):
        self.output = check_output_file(output, option, extensions)
        self.folder = self.output + ".progress"
        self.out = out or sys.stdout
        self.what = what
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise ValueError(f"{self.folder} exists and is not a folder; delete it or choose another {option}")
        self.progress_path = os.path.join(self.folder, "progress.json")
        recorded = None
        if os.path.exists(self.progress_path):
            try:
                import json

                with open(self.progress_path) as f:
                    stored = json.load(f)
                # the pending hash is recorded just before OUTPUT is renamed into place
                recorded = {stored.get("output_sha256"), stored.get("output_sha256_pending")} - {None}
            except (OSError, ValueError):
                recorded = None
        if os.path.exists(self.output) and (not recorded or file_sha256(self.output) not in recorded):
            raise ValueError(
                f"{self.output} exists and was not written by this command with these settings (or was changed since); "
                f"it is never overwritten: choose another {option}, or delete the file"
            )
        os.makedirs(self.folder, exist_ok=True)
        self.stored = check_settings_file(
            self.progress_path, settings, what,
            advice=f"Use another {option}, or delete {self.output} and {self.folder} to start over.",
        )
        self.settings = dict(settings)
        self.complete = bool(self.stored.get("complete")) and os.path.exists(self.output)
        if self.stored.get("complete") and not self.complete:
            print(f"{self.output} (complete) was deleted: running {what} again from the start", file=self.out)
            self.stored = dict(self.settings)
            self._remove_chunks()
            write_json_atomic(self.progress_path, self.stored)
        self.n_done = 0 if self.complete else self._count_chunks()

    # ------------------------------------------------------------------ chunks
    def chunk_path(self, i):
        return os.path.join(self.folder, f"chunk_{int(i):06d}.npz")

    def _count_chunks(self):
        n = 0
        while os.path.exists(self.chunk_path(n)):
            try:
                with np.load(self.chunk_path(n)) as z:
                    for key in z.files:
                        z[key]
            except Exception as exc:  # a damaged file (disk full, hardware): redo it and what follows
                print(f"{self.chunk_path(n)} cannot be read ({exc}); redoing it", file=self.out)
                break
            n += 1
        for path in glob.glob(os.path.join(self.folder, "chunk_*.npz")):
            if int(os.path.basename(path)[6:12]) >= n:
                os.remove(path)  # after a gap or a damaged chunk: never mixed into the result
        return n

    def _remove_chunks(self):
        for path in glob.glob(os.path.join(self.folder, "chunk_*.npz")):
            os.remove(path)

    def load_chunk(self, i):
        with np.load(self.chunk_path(i), allow_pickle=False) as z:
            return {key: z[key] for key in z.files}

    def save_chunk(self, i, total, **arrays):
        """Write chunk ``i`` atomically, then record the progress (``completed_chunks``, ``total``)."""
        with atomic_write(self.chunk_path(i), "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        self.n_done = i + 1
        self.update(completed_chunks=i + 1, total_chunks=int(total))

    def update(self, **info):
        """Add entries to ``progress.json`` (atomically)."""
        self.stored.update(info)
        write_json_atomic(self.progress_path, self.stored)

    def finish(self, write, result_arrays=None, **info):
        """Write OUTPUT atomically with ``write(temporary_path)`` (the temporary path has OUTPUT's
        extension), record its SHA-256 and ``info`` as complete, keep ``result_arrays`` in
        ``result.npz`` and remove the chunks."""
        if result_arrays:
            with atomic_write(os.path.join(self.folder, "result.npz"), "wb") as f:
                np.savez(f, **{k: np.asarray(v) for k, v in result_arrays.items()})
        with atomic_write(self.output, mode=None) as tmp:
            write(tmp)
            sha = file_sha256(tmp)
            self.update(output_sha256_pending=sha)
        self.update(complete=True, output_sha256=sha, **info)
        self._remove_chunks()
        self.complete = True

    def load_result(self):
        path = os.path.join(self.folder, "result.npz")
        if not os.path.exists(path):
            return {}
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}


def _sampling_fingerprints(model, reduced_potential=None):
    """What a sampling run records of its model (and target): the model file's SHA-256 (or the
    in-memory model's fingerprint), the System's serialized SHA-256 and the temperature (K)."""
    out = dict(model_sha256=file_sha256(model.checkpoint_path) if getattr(model, "checkpoint_path", None) else model.fingerprint())
    if reduced_potential is not None:
        import hashlib

        import openmm

        out.update(system_sha256=hashlib.sha256(openmm.XmlSerializer.serialize(reduced_potential.system).encode()).hexdigest(),
                   temperature_K=float(reduced_potential.temperature))
    return out


def sample_to_file(model, output, n, reduced_potential=None, proposal_temperature=1.0, seed=None, chunk_size=1000,
                   resample=False, progress=False, out=None):
    """Draw ``n`` proposals in chunks of ``chunk_size``, saving each chunk as it is done, and write
    them (or, with ``resample``, a resampled population) to the trajectory file ``output``.

    With a ``reduced_potential`` every chunk also holds the reduced potentials, stereochemistry
    and log densities, and the result has importance weights; ``OUTPUT.progress/result.npz``
    keeps ``log_q``, ``reduced_potentials``, ``valid`` and ``log_weights`` of every proposal (in
    the order of the proposals; with ``resample``, ``resampled_indices`` too).

    Chunk ``c`` is drawn with the seed :func:`chunk_seed` (``seed``, ``c``), so the proposals are
    a function of the seed and the chunk size whether the run was interrupted or not (without a
    seed one is drawn and recorded in ``progress.json``). A rerun with the same arguments resumes
    after the last complete chunk; SIGINT/SIGTERM stop after the current chunk
    (:class:`RunInterrupted`).

    Returns
    -------
    (ImportanceSamplingResult or None, positions written (n', N, 3) nm, ChunkStore)
    """
    from ..physics import check_target
    from ..utils import GracefulStop, progress_bar
    from .importance import ImportanceSamplingResult, log_importance_weights

    n, chunk_size = int(n), int(chunk_size)
    if n < 1 or chunk_size < 1:
        raise ValueError(f"n ({n}) and chunk_size ({chunk_size}) must be positive integers")
    weights = reduced_potential is not None
    settings = dict(
        model_sha256=_sampling_fingerprints(model)["model_sha256"],
        n=n, chunk_size=chunk_size, proposal_temperature=float(proposal_temperature), seed=None if seed is None else int(seed),
        weights=weights, resample=bool(resample),
    )
    if weights:
        settings.update(_sampling_fingerprints(model, reduced_potential))
        check_target(reduced_potential.system, model.graph)
    store = ChunkStore(output, settings, "a sampling run", out=out)
    n_chunks = -(-n // chunk_size)
    if store.complete:
        print(f"{store.output} is already complete with these settings (delete it and {store.folder} to draw again)",
              file=store.out)
        return _completed_samples(store, model, weights)
    if seed is None:
        seed = store.stored.get("seed_used", int(np.random.SeedSequence().generate_state(1)[0]))
    store.update(seed_used=int(seed))
    if store.n_done:
        print(f"resuming {store.folder}: {min(store.n_done * chunk_size, n)} of {n} proposals done", file=store.out)
    bar = progress_bar(total=n, initial=min(store.n_done * chunk_size, n), desc="sample", unit="proposal", disable=not progress)
    with GracefulStop(f"stopping after the current chunk of {chunk_size} proposals (Ctrl-C again to stop now)") as stop:
        for c in range(store.n_done, n_chunks):
            n_here = min(chunk_size, n - c * chunk_size)
            x, log_q = model.sample(n_here, proposal_temperature=proposal_temperature, seed=chunk_seed(seed, c))
            arrays = dict(positions=np.asarray(x, dtype=np.float32), log_q=log_q)
            if weights:
                valid = model.check_stereo(x)
                u = np.full(len(x), np.inf)
                if valid.any():
                    u[valid] = reduced_potential(x[valid])
                arrays.update(valid=valid, reduced_potentials=u)
            store.save_chunk(c, n_chunks, **arrays)
            bar.update(n_here)
            if stop.requested and c + 1 < n_chunks:
                bar.close()
                raise RunInterrupted(store, (c + 1) * chunk_size, n, stop.requested, "proposals")
    bar.close()
    chunks = [store.load_chunk(c) for c in range(n_chunks)]
    positions = np.concatenate([ch["positions"] for ch in chunks])
    log_q = np.concatenate([ch["log_q"] for ch in chunks])
    result, kept = None, dict(log_q=log_q)
    if weights:
        u = np.concatenate([ch["reduced_potentials"] for ch in chunks])
        valid = np.concatenate([ch["valid"] for ch in chunks])
        result = ImportanceSamplingResult(positions, log_q, u, valid, log_importance_weights(u, log_q, valid))
        kept.update(reduced_potentials=u, valid=valid, log_weights=result.log_weights)
    written = positions
    if resample:
        from .importance import resample as resample_indices

        idx = resample_indices(result.log_weights, rng=int(seed))
        written = positions[idx]
        kept["resampled_indices"] = idx
    import mdtraj

    top = model.topology
    store.finish(lambda tmp: mdtraj.Trajectory(written.astype(np.float32), top).save(tmp), result_arrays=kept,
                 summary=result.summary() if result is not None else f"{n} samples, mean log q {np.mean(log_q):.2f}")
    return result, written, store


def load_weighed_proposals(output, model, reduced_potential):
    """The proposals of a complete :func:`sample_to_file` run with importance weights
    (``arbg sample --output OUTPUT``, without ``--resample``), checked to be this model's
    proposals weighed against this target: an :class:`ImportanceSamplingResult` that can be
    evaluated again (against another reference, for instance) without drawing anew.

    Raises ``ValueError`` saying what does not match (another model, system or temperature; a
    run without weights, resampled, or not complete).
    """
    import json

    output = os.fspath(output)
    folder = output + ".progress"
    progress = os.path.join(folder, "progress.json")
    if not (os.path.isfile(output) and os.path.isfile(progress)):
        raise FileNotFoundError(f"{output} with its {progress} is not there: write it with arbg sample --output {output} "
                                "(the same model, the target as --system)")
    with open(progress) as f:
        stored = json.load(f)
    if not stored.get("complete"):
        raise ValueError(f"{output}: the sampling run is not complete; run its arbg sample command again to finish it")
    if file_sha256(output) not in {stored.get("output_sha256"), stored.get("output_sha256_pending")} - {None}:
        raise ValueError(f"{output} is not the file its sampling run wrote (it was changed since)")
    if not stored.get("weights") or stored.get("resample"):
        raise ValueError(f"{output} holds " + ("a resampled population" if stored.get("resample") else "proposals without weights")
                         + ": evaluate needs every proposal with its weight (arbg sample --output, without --resample or --no-weights)")
    mine = _sampling_fingerprints(model, reduced_potential)
    for what, key in (("model", "model_sha256"), ("system", "system_sha256")):
        if mine[key] != stored.get(key):
            raise ValueError(f"{output} was drawn with another {what} than this one: give the {what} it was sampled with")
    if abs(float(stored.get("temperature_K", float("nan"))) - mine["temperature_K"]) > 1e-6:
        raise ValueError(f"{output} was weighed at {stored.get('temperature_K')} K, not at {mine['temperature_K']:g} K")
    with np.load(os.path.join(folder, "result.npz"), allow_pickle=False) as z:
        saved = {key: z[key] for key in z.files}
    positions = load_trajectory(output, top=model.topology).xyz
    if len(positions) != len(saved["log_weights"]):
        raise ValueError(f"{output} has {len(positions)} frames for {len(saved['log_weights'])} weights")
    return _weighed_result(positions, saved)


def _completed_samples(store, model, weights):
    saved = store.load_result()
    written = load_trajectory(store.output, top=model.topology).xyz
    result = None
    if weights:
        positions = written if "resampled_indices" not in saved else None
        result = _weighed_result(positions, saved)
    return result, written, store


def _weighed_result(positions, saved):
    """An ImportanceSamplingResult of saved proposals (``result.npz``'s arrays)."""
    from .importance import ImportanceSamplingResult

    return ImportanceSamplingResult(positions, saved["log_q"], saved["reduced_potentials"], saved["valid"], saved["log_weights"])
