"""Batches of training windows (``window`` consecutive frames) with background prefetch and exact resume.

A *window* is ``window`` consecutive frames of one trajectory starting at frame ``s`` with
``s in range(0, nt - window + 1, stride)``. Every epoch visits every window once in the order
``np.random.default_rng(seed + epoch).permutation(num_windows)``, in fixed-size batches (the remainder is
dropped, so a jitted step compiles once). The sequence depends only on ``(seed, epoch, position)``:
``state()`` after k batches + ``restore(state)`` in a fresh loader yields exactly batches k+1, k+2, ...

Batches are dicts of numpy arrays::

    {'u': (B, window, nx) or (B, window, nx, ny) float32 physical values (the trainer normalises),
     'nu': (B,) float32, 'dt': (B,) float32 time between frames}

With ``cache_in_memory`` (default) the selected trajectories are read once into RAM (the default dataset is
~20 MB at the reduced resolution); otherwise every batch reads its trajectories from the files. ``prefetch > 0``
builds batches in a background thread; an exception there is re-raised in the consumer.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np

from ups_jax.errors import CheckpointError, ConfigError, DataError

_STOP_POLL_S = 0.1


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class WindowLoader(Iterator[dict]):
    """Endless iterator over shuffled batches of windows; one epoch = ``batches_per_epoch`` batches."""

    def __init__(self, dataset, indices, *, window: int, batch_size: int, seed: int, prefetch: int = 2,
                 stride: int = 1, cache_in_memory: bool = True, read_chunk: int = 256):
        self._dataset = dataset
        self._traj = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.window, self.batch_size, self.seed = int(window), int(batch_size), int(seed)
        self.stride, self.prefetch = int(stride), int(prefetch)
        if self.window < 1 or self.batch_size < 1 or self.stride < 1 or self.prefetch < 0:
            raise ConfigError(f"need window, batch_size, stride >= 1 and prefetch >= 0 (got {self.window}, "
                              f"{self.batch_size}, {self.stride}, {self.prefetch})")
        nt = dataset.nt
        if self.window > nt:
            raise ConfigError(f"window of {self.window} frames is longer than the trajectories ({nt} frames at "
                              f"reduced_resolution_t={getattr(dataset, 'reduced_resolution_t', '?')})")
        if self._traj.size == 0:
            raise DataError("WindowLoader: no trajectories selected (empty split)")
        self.starts_per_trajectory = (nt - self.window) // self.stride + 1
        self.num_windows = int(self._traj.size * self.starts_per_trajectory)
        self.batches_per_epoch = self.num_windows // self.batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(f"batch_size {self.batch_size} exceeds the {self.num_windows} windows available "
                              f"({self._traj.size} trajectories x {self.starts_per_trajectory} starts)")
        self._nu = np.asarray(dataset.nu, np.float32)[self._traj]
        self._dt = np.float32(dataset.dt)
        self._cache = None
        if cache_in_memory:
            grid = tuple(getattr(dataset, "spatial_shape", (dataset.nx,)))       # (X,) or (X, Y): 1-D and 2-D
            self._cache = np.empty((self._traj.size, nt) + grid, np.float32)
            for s in range(0, self._traj.size, read_chunk):
                self._cache[s:s + read_chunk] = dataset.read(self._traj[s:s + read_chunk])
        self._offsets = np.arange(self.window)
        self._epoch, self._position = 0, 0
        self._perm, self._perm_epoch = None, None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None

    # ---- position ----
    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def state(self) -> dict:
        """Position of the next batch the consumer will get (not of the prefetcher), JSON-serialisable."""
        return {"epoch": self._epoch, "position": self._position, "seed": self.seed,
                "batch_size": self.batch_size, "num_windows": self.num_windows}

    def restore(self, state: dict) -> None:
        """Continues from ``state()``: the next batch is the one that followed when the state was taken."""
        for key, mine in (("seed", self.seed), ("batch_size", self.batch_size), ("num_windows", self.num_windows)):
            if key in state and int(state[key]) != mine:
                raise CheckpointError(f"loader state has {key}={state[key]} but this loader has {mine}; the data "
                                      f"or config changed since the checkpoint")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.batches_per_epoch:
            raise CheckpointError(f"loader state (epoch {epoch}, position {position}) is outside "
                                  f"0..{self.batches_per_epoch - 1}")
        self._shutdown()
        self._epoch, self._position = epoch, position

    # ---- batches ----
    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:      # one permutation per epoch (next_indices asks for it every batch)
            self._perm = np.random.default_rng(self.seed + epoch).permutation(self.num_windows)
            self._perm_epoch = epoch
        return self._perm

    def _indices(self, perm: np.ndarray, position: int) -> tuple[np.ndarray, np.ndarray]:
        ids = perm[position * self.batch_size:(position + 1) * self.batch_size]
        return ids // self.starts_per_trajectory, (ids % self.starts_per_trajectory) * self.stride

    def _batch(self, perm: np.ndarray, position: int) -> dict:
        slots, starts = self._indices(perm, position)
        frames = starts[:, None] + self._offsets[None, :]
        if self._cache is not None:
            u = self._cache[slots[:, None], frames]
        else:
            wanted, inverse = np.unique(slots, return_inverse=True)
            data = self._dataset.read(self._traj[wanted])
            u = data[inverse.reshape(-1)[:, None], frames]
        return {"u": np.ascontiguousarray(u, dtype=np.float32), "nu": self._nu[slots],
                "dt": np.full(slots.size, self._dt, np.float32)}

    def _produce(self, epoch: int, position: int):
        while True:
            perm = np.random.default_rng(self.seed + epoch).permutation(self.num_windows)   # not the cache: a thread
            for pos in range(position, self.batches_per_epoch):
                yield epoch, pos, self._batch(perm, pos)
            epoch, position = epoch + 1, 0

    def _advance(self, epoch: int, position: int) -> None:
        position += 1
        if position == self.batches_per_epoch:
            epoch, position = epoch + 1, 0
        self._epoch, self._position = epoch, position

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.prefetch == 0:
            epoch, position = self._epoch, self._position
            batch = self._batch(self._permutation(epoch), position)
            self._advance(epoch, position)
            return batch
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._shutdown()
            raise item.exc
        epoch, position, batch = item
        self._advance(epoch, position)
        return batch

    # ---- device-resident training (training/step.py) ----
    @property
    def resident(self) -> dict | None:
        """The cached split as the batches' arrays are cut from it — {'u': (n_traj, nt, nx) physical values,
        'nu': (n_traj,), 'dt': ()} — or None without ``cache_in_memory``. A trainer that keeps it on the device
        takes :meth:`next_indices` instead of batches."""
        if self._cache is None:
            return None
        return {"u": self._cache, "nu": self._nu, "dt": self._dt}

    def next_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch as window indices into :attr:`resident` — (slots (B,), start frames (B,)) — advancing
        the position exactly as ``next()`` does (same permutation, same resume state)."""
        if self._thread is not None:      # the prefetcher would be ahead of the position: stop it
            self._shutdown()
        epoch, position = self._epoch, self._position
        slots, starts = self._indices(self._permutation(epoch), position)
        self._advance(epoch, position)
        return slots, starts

    # ---- background thread ----
    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._worker, args=(self._epoch, self._position, self._queue,
                                                                   self._stop),
                                        name="WindowLoader-prefetch", daemon=True)
        self._thread.start()

    def _worker(self, epoch: int, position: int, q: queue.Queue, stop: threading.Event) -> None:
        try:
            for item in self._produce(epoch, position):
                if not self._put(q, stop, item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(q, stop, _Failure(e))

    @staticmethod
    def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_STOP_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _shutdown(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread, self._queue, self._stop = None, None, None

    def close(self) -> None:
        """Stops the prefetch thread; iterating again restarts it from the current position."""
        self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self._shutdown()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
