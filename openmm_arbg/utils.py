"""Small helpers shared across the package: atomic file writes, settings files of resumable
runs, content hashes, bootstrap errors, and silencing pymbar's import banner."""

import contextlib
import glob
import hashlib
import json
import logging
import os
import tempfile

import numpy as np

__all__ = [
    "Settings", "atomic_write", "write_json_atomic", "check_settings_file", "check_output_file", "file_sha256", "bootstrap",
    "quiet_pymbar", "progress_bar", "GracefulStop", "dcd_header_frames", "check_dcd_complete", "load_trajectory",
]


@contextlib.contextmanager
def atomic_write(path, mode="w", newline=None):
    """Open a temporary file beside ``path`` for writing; on success rename it over ``path``.

    A reader never sees a half-written file and an interrupted write leaves the old file in place.
    A process killed with SIGKILL cannot remove its temporary file; the next write of the same
    ``path`` removes such leftovers (``<name>.<random>.tmp<ext>``), so a resumed run cleans up
    after the run that was killed. Yields the open file (text mode ``"w"`` or binary ``"wb"``); with ``mode=None`` it yields the
    temporary file's path instead, for writers that open files themselves.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]  # keep the extension: some writers choose the format by it
    prefix = os.path.basename(path) + "."
    for leftover in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*" + glob.escape(".tmp" + suffix))):
        with contextlib.suppress(OSError):
            os.remove(leftover)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp" + suffix)
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


def check_settings_file(path, settings, what="a run", advice=None, optional_keys=()):
    """The settings file of a resumable run: refuse to mix runs with different settings.

    If ``path`` exists, its JSON must agree with ``settings`` on every key of ``settings`` (it may
    hold more, e.g. progress counters) and is returned; otherwise ``settings`` is written there
    (atomically) and returned. ``advice`` replaces the default advice of the message ("use another
    output folder, or delete it to start over"). Keys in ``optional_keys`` are compared only when
    the stored file has them (settings added after older runs were written: those resume).

    Raises
    ------
    ValueError
        Naming the settings that differ, with the stored and the new values.
    """
    if not os.path.exists(path):
        write_json_atomic(path, settings)
        return dict(settings)
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the settings file {path} ({exc}); delete it to start over") from None
    changed = sorted(key for key in settings
                     if stored.get(key) != settings[key] and not (key in optional_keys and key not in stored))
    if changed:
        folder = os.path.dirname(os.path.abspath(path))
        details = "; ".join(f"{key} was {_short(stored.get(key))}, now {_short(settings[key])}" for key in changed)
        raise ValueError(
            f"{folder} holds {what} with other settings ({', '.join(changed)}): {details}. "
            + (advice or "Use another output folder, or delete it to start over.")
        )
    return stored


def _short(value, limit=60):
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_output_file(path, option="--output", extensions=None):
    """Check, before any computing, that a result can be written to the file ``path``.

    Creates missing parent folders (as writing would). Raises ``ValueError`` naming ``option``
    when ``path`` is empty, is a folder or something else that is not a file, has an extension
    not in ``extensions`` (e.g. ``(".dcd", ".xtc")``), or its folder cannot be created or written in.
    Returns the absolute path.
    """
    if not path or not str(path).strip():
        raise ValueError(f"{option} is empty; give a file name")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a folder; give a file name inside it (e.g. {os.path.join(path, 'out.dcd')})")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ValueError(f"{option} {path} exists and is not a regular file")
    if extensions is not None:
        lower = path.lower()
        if not any(lower.endswith(e) for e in extensions):
            raise ValueError(f"{option} {path}: unknown file type; use one of {', '.join(extensions)}")
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot create the folder {directory} ({exc.strerror or exc})") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".arbg-write-test.")
        os.close(fd)
        os.remove(tmp)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write in {directory} ({exc.strerror or exc})") from None
    return path


class GracefulStop:
    """SIGINT (Ctrl-C) and SIGTERM ask a long loop to stop at its next safe point.

    Used as a context manager around a loop that checks :attr:`requested` after each unit of
    work it has saved. The first signal sets :attr:`requested` and prints ``message``; a second
    one raises ``KeyboardInterrupt`` at once (the unit of work in progress is lost, nothing saved
    is). Outside the main thread it does nothing (signals go to the main thread only).
    """

    def __init__(self, message="stopping after the current chunk (press Ctrl-C again to stop now)", file=None):
        self.message, self.file = message, file
        self.requested = None  # the name of the signal received
        self._previous = {}

    def _handle(self, signum, frame):
        import signal
        import sys

        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: {self.message}", file=self.file or sys.stderr, flush=True)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False


def file_sha256(path):
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dcd_header_frames(path):
    """The number of frames a DCD file's header announces, or None if ``path`` is not a DCD file
    with 32-bit record markers (CHARMM/NAMD/OpenMM/mdtraj) or the header does not say."""
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[4:8] != b"CORD":
        return None
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 84:
            n = struct.unpack(endian + "i", head[8:12])[0]
            return n if n > 0 else None
    return None


def check_dcd_complete(path, n_frames_read, stride=1):
    """``ValueError`` if the DCD file ``path`` holds fewer frames than its header announces (a
    truncated copy or an interrupted write, which readers silently cut to the whole frames left);
    ``n_frames_read`` frames were read with ``stride``. Other formats are not checked."""
    if not os.fspath(path).lower().endswith(".dcd"):
        return
    announced = dcd_header_frames(path)
    if announced is None:
        return
    expected = -(-announced // max(int(stride), 1))
    if n_frames_read < expected:
        raise ValueError(
            f"{path} is truncated: its header announces {announced} frames but only {n_frames_read * max(int(stride), 1)} "
            f"or fewer are complete (an interrupted copy or write). Copy or write the file again; to use the complete "
            "frames anyway, save them to a new file first (mdtraj.load(...).save(...))"
        )


def bootstrap(statistic, n_samples, n_bootstrap=200, rng=None):
    """Bootstrap replicates of ``statistic(indices)`` over ``n_samples`` items resampled with
    replacement; returns an array (n_bootstrap, ...)."""
    rng = np.random.default_rng(rng)
    return np.array([statistic(rng.integers(0, n_samples, n_samples)) for _ in range(int(n_bootstrap))])


def quiet_pymbar():
    """Silence pymbar's logger (it prints banners and solver chatter at INFO/WARNING)."""
    logging.getLogger("pymbar").setLevel(logging.ERROR)


def load_trajectory(path, **kwargs):
    """``mdtraj.load(path, **kwargs)`` without the two lines that mdtraj's DCD reader prints from C
    on every load ("dcdplugin) detected standard 32-bit DCD file ..."): the C-level standard output
    goes to the null device while the file is read. Errors still raise, and Python's own output
    is untouched."""
    import mdtraj

    if not str(path).lower().endswith(".dcd"):
        return mdtraj.load(path, **kwargs)
    import ctypes
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no file descriptor 1 (an embedded interpreter)
        return mdtraj.load(path, **kwargs)
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # no C library to flush (Windows): leave the output alone
        os.close(saved)
        return mdtraj.load(path, **kwargs)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        try:
            return mdtraj.load(path, **kwargs)
        finally:
            libc.fflush(None)  # what the C library buffered goes to the null device, not to the next print
            os.dup2(saved, 1)
    finally:
        os.close(null)
        os.close(saved)


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


# ---------------------------------------------------------------------- progress
class _LogProgress:
    """tqdm's interface, written as plain lines: for logs, where bar redraws would be noise.

    A line at most every ``interval_s`` seconds or every 10 % of ``total`` (whichever comes later),
    and one at the end."""

    def __init__(self, iterable=None, total=None, desc=None, unit="it", initial=0, interval_s=20.0, file=None, **_):
        import sys
        import time

        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.n = total, desc or "progress", unit, int(initial)
        self.interval_s, self.file = float(interval_s), file or sys.stderr
        self._clock = time.monotonic
        self._t0 = self._last_t = self._clock()
        self._n0 = self._last_n = self.n
        self._postfix = ""
        self._closed = False

    def _line(self):
        elapsed = self._clock() - self._t0
        rate = (self.n - self._n0) / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.n < self.total:
            eta = f", ~{(self.total - self.n) / rate:.0f} s left"
        post = f" [{self._postfix}]" if self._postfix else ""
        return f"{self.desc}: {self.n}{of} {self.unit}{pct}, {elapsed:.0f} s, {rate:.3g} {self.unit}/s{eta}{post}"

    def update(self, n=1):
        self.n += n
        now = self._clock()
        step = 0.1 * self.total if self.total else 0
        waited = now - self._last_t
        if waited >= self.interval_s and (self.n - self._last_n >= step or waited >= 15 * self.interval_s):
            print(self._line(), file=self.file, flush=True)
            self._last_t, self._last_n = now, self.n

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s="", refresh=True):
        self._postfix = str(s)

    def set_description(self, desc=None, refresh=True):
        self.desc = desc or self.desc

    def refresh(self):
        pass

    def close(self):
        if not self._closed and self.n != self._last_n:
            print(self._line(), file=self.file, flush=True)
        self._closed = True

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(iterable=None, total=None, desc=None, unit="it", initial=0, disable=False, file=None, interval_s=20.0):
    """A progress display with tqdm's interface: a tqdm bar when ``file`` (default stderr) is a
    terminal, plain lines (at most one per ``interval_s`` seconds and 10 %) when it is not (logs,
    pipes, batch jobs), nothing with ``disable``."""
    import sys

    stream = file or sys.stderr
    if disable:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=True)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream)
    return _LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, interval_s=interval_s, file=stream)
