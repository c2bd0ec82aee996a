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

from ..utils import atomic_write, check_output_file, check_settings_file, file_sha256, write_json_atomic

__all__ = ["ChunkStore", "RunInterrupted", "TRAJECTORY_EXTENSIONS", "chunk_seed"]

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
