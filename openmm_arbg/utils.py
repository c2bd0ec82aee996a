"""Small helpers shared across the package: atomic file writes, settings files of resumable
runs, content hashes, bootstrap errors, and silencing pymbar's import banner."""

import contextlib
import hashlib
import json
import logging
import os
import tempfile

import numpy as np

__all__ = ["Settings", "atomic_write", "write_json_atomic", "check_settings_file", "file_sha256", "bootstrap", "quiet_pymbar"]


@contextlib.contextmanager
def atomic_write(path, mode="w", newline=None):
    """Open a temporary file beside ``path`` for writing; on success rename it over ``path``.

    A reader never sees a half-written file and an interrupted write leaves the old file in place.
    Yields the open file (text mode ``"w"`` or binary ``"wb"``); with ``mode=None`` it yields the
    temporary file's path instead, for writers that open files themselves.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # keep the extension: some writers choose the format by it
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        if mode is None:
            yield tmp
        else:
            with open(tmp, mode, newline=newline) as f:
                yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, data):
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2)


def check_settings_file(path, settings, what="a run"):
    """The settings file of a resumable run: refuse to mix runs with different settings.

    If ``path`` exists, its JSON must agree with ``settings`` on every key of ``settings`` (it may
    hold more, e.g. progress counters) and is returned; otherwise ``settings`` is written there
    (atomically) and returned.

    Raises
    ------
    ValueError
        Naming the settings that differ.
    """
    if not os.path.exists(path):
        write_json_atomic(path, settings)
        return dict(settings)
    with open(path) as f:
        stored = json.load(f)
    changed = sorted(key for key in settings if stored.get(key) != settings[key])
    if changed:
        folder = os.path.dirname(os.path.abspath(path))
        raise ValueError(
            f"{folder} holds {what} with other settings ({', '.join(changed)}); use another output folder, or "
            "delete it to start over"
        )
    return stored


def file_sha256(path):
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bootstrap(statistic, n_samples, n_bootstrap=200, rng=None):
    """Bootstrap replicates of ``statistic(indices)`` over ``n_samples`` items resampled with
    replacement; returns an array (n_bootstrap, ...)."""
    rng = np.random.default_rng(rng)
    return np.array([statistic(rng.integers(0, n_samples, n_samples)) for _ in range(int(n_bootstrap))])


def quiet_pymbar():
    """Silence pymbar's logger (it prints banners and solver chatter at INFO/WARNING)."""
    logging.getLogger("pymbar").setLevel(logging.ERROR)


class Settings:
    """Base of the settings dataclasses (``ModelConfig``, ``NetworkConfig``, ``TrainingConfig``):
    plain-dict conversion that refuses unknown names. ``what`` names them in messages."""

    what = "settings"

    def to_dict(self):
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        from dataclasses import fields

        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.what} {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)
