"""In-memory replay with each frame stored once and n-step returns computed at sampling time.

Slots form one ring indexed by a global step counter ``g`` (slot = g % capacity).
Slot g holds what arrived at step g: the newest frame of the observation, the
action that led to it, the reward and the environment discount (0 at a true
termination).  A pixel observation is rebuilt from the last ``frame_stack``
frames, clamped at the episode's first frame (the stacker repeats it at reset).
Sampling is uniform over stored transitions; a transition whose n-step window
runs past the end of a finished episode is cut there (a shorter, still
correctly bootstrapped return), and one in the running episode waits for its
full window.

Frames are kept by a frame store chosen with ``frame_codec`` (``FRAME_CODECS``):

- ``"none"``: one preallocated ``(capacity, *frame_shape)`` array, as always.
- ``"lz4"``: lossless compression of uint8 pixel frames (``_DeltaFrameStore``):
  each frame is stored as its byte-wise difference (mod 256) to the previous
  frame of its episode, lz4-compressed, with a keyframe at every episode start
  and every ``KEYFRAME_INTERVAL`` global steps, so decoding a frame never walks
  back more than ``KEYFRAME_INTERVAL - 1`` frames.  Memory grows with what is
  stored.  Sampled batches are bit-identical to the uncompressed store's for
  the same seed: only where the bytes live changes, never which transitions are
  drawn.  State vectors (float frames) are refused: they need ``"none"``.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from typing import Any

import numpy as np

from contract.config import FRAME_CODECS, FrameCodec  # noqa: F401 - declared with the trial config

# How the replay stores a frame of each observation type (rendered pixels, the state vector), and what every slot
# holds besides its frame: the action, the reward and discount, the episode's start and end.
FRAME_DTYPES: dict[str, np.dtype] = {"pixels": np.dtype(np.uint8), "states": np.dtype(np.float32)}
ACTION_DTYPE, SCALAR_DTYPE, INDEX_DTYPE = np.dtype(np.float32), np.dtype(np.float32), np.dtype(np.int64)
_OPEN = np.iinfo(INDEX_DTYPE).max  # episode_end of an episode still running

KEYFRAME_INTERVAL = 16  # a compressed store starts a keyframe at every multiple of this global index
LZ4_LEVEL = 10  # lz4 high-compression level of the "lz4" codec; 0: lz4's fast mode (bench.replay_codec compares)


def replay_slots(capacity: int, num_frames: int, action_repeat: int, frame_stack: int) -> int:
    """Slots a trial's replay allocates: ``capacity``, capped by what the trial can fill (its agent steps and a
    margin of ``2 * frame_stack + 2``): never allocate what stays empty, 1M pixel slots are 21 GB."""
    agent_steps = math.ceil(num_frames / action_repeat)
    return min(capacity, agent_steps + 2 * frame_stack + 2)


def slot_bytes(action_dim: int) -> int:
    """Bytes every slot holds besides its frame, whatever the frame codec (the arrays ``ReplayBuffer`` allocates)."""
    return ACTION_DTYPE.itemsize * action_dim + 2 * SCALAR_DTYPE.itemsize + 2 * INDEX_DTYPE.itemsize


def raw_frame_bytes(obs_type: str, frame_shape: tuple[int, ...]) -> int:
    """Bytes of one uncompressed stored frame (``frame_codec: none``)."""
    return math.prod(frame_shape) * FRAME_DTYPES[obs_type].itemsize


class ReplayBuffer:
    """Ring replay of ``capacity`` transitions.

    ``frame_codec`` (one of ``FRAME_CODECS``) picks where frames live: ``"none"``
    (the default) keeps them uncompressed in one preallocated array; ``"lz4"``
    keeps uint8 pixel frames losslessly compressed (``_DeltaFrameStore``) and
    raises ``ValueError`` for any other frame dtype.  Sampling, n-step returns and
    frame stacking do not depend on the codec: batches are bit-identical.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        frame_dtype: Any,
        frame_stack: int,
        action_dim: int,
        nstep: int,
        discount: float,
        seed: int,
        frame_codec: str = "none",
    ):
        if frame_codec not in FRAME_CODECS:
            raise ValueError(f"frame_codec={frame_codec!r}: must be one of {', '.join(FRAME_CODECS)}")
        if frame_codec != "none" and np.dtype(frame_dtype) != np.uint8:
            raise ValueError(
                f"frame_codec={frame_codec!r} compresses uint8 pixel frames only; frames of dtype "
                f"{np.dtype(frame_dtype)} (state vectors) need frame_codec='none'"
            )
        self.capacity = int(capacity)
        self.frame_stack = frame_stack
        self.nstep = nstep
        self.discount = discount
        self.frame_codec = frame_codec
        self.frame_shape = tuple(frame_shape)
        if frame_codec == "none":
            self.frames = np.zeros((self.capacity, *frame_shape), dtype=frame_dtype)
            self._store = None
        else:
            self._store = _DeltaFrameStore(self.capacity, self.frame_shape, frame_codec)
        self.actions = np.zeros((self.capacity, action_dim), dtype=ACTION_DTYPE)
        self.rewards = np.zeros(self.capacity, dtype=SCALAR_DTYPE)
        self.discounts = np.zeros(self.capacity, dtype=SCALAR_DTYPE)
        self.episode_start = np.zeros(self.capacity, dtype=INDEX_DTYPE)
        self.episode_end = np.full(self.capacity, _OPEN, dtype=INDEX_DTYPE)
        self.next_index = 0  # global index of the next slot to write
        self._current_start = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.next_index, self.capacity)

    @property
    def bytes_per_transition(self) -> float:
        """Bytes of host memory held per transition.

        ``"none"``: every preallocated array divided by the capacity (the store is
        allocated at construction, so this is what a full replay costs per slot).
        Compressed stores: the per-slot arrays (actions, rewards, discounts, episode
        bounds) divided by the capacity, plus the frame store's bytes (compressed
        frames still held, including the not yet freed part of the oldest chunk,
        the open chunk's buffer, the per-chunk offsets and chain depths, and the
        raw copy of the previous frame) divided by the transitions stored now; an
        empty compressed replay reports its per-slot part only.
        """
        arrays = (self.actions, self.rewards, self.discounts, self.episode_start, self.episode_end)
        per_slot = sum(a.nbytes for a in arrays) / self.capacity
        if self._store is None:
            return per_slot + self.frames.nbytes / self.capacity
        per_slot += self._store.index_nbytes / self.capacity
        return per_slot + (self._store.data_nbytes / len(self) if len(self) else 0.0)

    def add(
        self, frame: np.ndarray, action: np.ndarray | None, reward: float, discount: float, *, first: bool, last: bool
    ) -> None:
        """Store one step; ``action`` is the one that led here (None on an episode's first step)."""
        g = self.next_index
        slot = g % self.capacity
        if first:
            self._current_start = g
        if self._store is None:
            self.frames[slot] = frame
        else:
            self._store.add(g, frame, first)
        self.actions[slot] = 0.0 if action is None else action
        self.rewards[slot] = reward
        self.discounts[slot] = discount
        self.episode_start[slot] = self._current_start
        self.episode_end[slot] = _OPEN
        if last:
            first_kept = max(self._current_start, g - self.capacity + 1)
            self.episode_end[np.arange(first_kept, g + 1) % self.capacity] = g
        self.next_index = g + 1

    def can_sample(self) -> bool:
        return bool(self._valid(np.arange(self._low(), max(self._low(), self.next_index - 1))).any())

    def _low(self) -> int:
        # The oldest index whose whole frame stack is still in the ring.
        return max(0, self.next_index - self.capacity) + self.frame_stack - 1

    def _valid(self, g: np.ndarray) -> np.ndarray:
        end = self.episode_end[g % self.capacity]
        latest = self.next_index - 1
        return (g < end) & ((end != _OPEN) | (g + self.nstep <= latest))

    def sample_indices(self, batch_size: int) -> np.ndarray:
        low, high = self._low(), self.next_index - 1  # g in [low, high)
        if high <= low:
            raise RuntimeError("replay holds no complete transition yet")
        chosen = self.rng.integers(low, high, size=batch_size)
        bad = ~self._valid(chosen)
        for _ in range(1000):
            if not bad.any():
                return chosen
            chosen[bad] = self.rng.integers(low, high, size=int(bad.sum()))
            bad = ~self._valid(chosen)
        raise RuntimeError("replay holds no complete transition yet")

    def _stack(self, g: np.ndarray) -> np.ndarray:
        k = self.frame_stack
        if k == 1:
            return self.frames[g % self.capacity]
        start = self.episode_start[g % self.capacity]
        offsets = np.arange(-k + 1, 1)
        indices = np.maximum(g[:, None] + offsets[None, :], start[:, None])
        stacked = self.frames[indices % self.capacity]  # (B, k, C, H, W)
        return stacked.reshape(len(g), -1, *self.frames.shape[2:])

    def _stack_indices(self, g: np.ndarray) -> np.ndarray:
        """(B, k) global frame indices of the stacks ending at ``g``, clamped at episode starts."""
        start = self.episode_start[g % self.capacity]
        offsets = np.arange(-self.frame_stack + 1, 1)
        return np.maximum(g[:, None] + offsets[None, :], start[:, None])

    def _stacks(self, g: np.ndarray, g_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._store is None:
            return self._stack(g), self._stack(g_next)
        # One decode for obs and next_obs together: each distinct frame (and keyframe chain) once.
        indices = np.stack([self._stack_indices(g), self._stack_indices(g_next)])  # (2, B, k)
        frames = self._store.gather(indices)  # (2, B, k, C, H, W)
        stacked = frames.reshape(2, len(g), -1, *self.frame_shape[1:])
        return stacked[0], stacked[1]

    def batch_spec(self, batch_size: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shape and dtype of each array ``sample(batch_size)`` returns (a worker's batch slot is laid out so)."""
        frame_dtype = np.dtype(np.uint8) if self._store is not None else self.frames.dtype
        obs = (batch_size, self.frame_shape[0] * self.frame_stack, *self.frame_shape[1:])
        scalar = ((batch_size, 1), np.dtype(np.float32).str)
        return {
            "obs": (obs, frame_dtype.str),
            "action": ((batch_size, self.actions.shape[1]), self.actions.dtype.str),
            "reward": scalar,
            "discount": scalar,
            "next_obs": (obs, frame_dtype.str),
        }

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        g = self.sample_indices(batch_size)
        return self.transitions(g)

    def transitions(self, g: np.ndarray) -> dict[str, np.ndarray]:
        """n-step transitions starting at global indices ``g`` (already known valid)."""
        end = self.episode_end[g % self.capacity]
        n_eff = np.minimum(self.nstep, end - g)  # end is _OPEN for a running episode
        steps = np.arange(1, self.nstep + 1)
        within = steps[None, :] <= n_eff[:, None]
        slots = (g[:, None] + np.minimum(steps[None, :], n_eff[:, None])) % self.capacity
        rewards = np.where(within, self.rewards[slots], 0.0)
        factors = np.where(within, self.discount * self.discounts[slots], 1.0)
        before = np.cumprod(np.concatenate([np.ones((len(g), 1)), factors[:, :-1]], axis=1), axis=1)
        obs, next_obs = self._stacks(g, g + n_eff)
        return {
            "obs": obs,
            "action": self.actions[(g + 1) % self.capacity],
            "reward": (before * rewards).sum(axis=1, dtype=np.float64).astype(np.float32)[:, None],
            "discount": np.prod(factors, axis=1).astype(np.float32)[:, None],
            "next_obs": next_obs,
        }

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Numpy arrays and numpy integers only (no pickled objects).

        The per-slot arrays hold slots ``0 .. len(self) - 1``; ``"frames"`` too for
        ``frame_codec="none"``.  A compressed store adds ``frame_codec`` (a str) and
        its ``frame_store/...`` arrays (``_DeltaFrameStore.state_dict``).
        """
        kept = len(self)
        state = {
            "actions": self.actions[:kept],
            "rewards": self.rewards[:kept],
            "discounts": self.discounts[:kept],
            "episode_start": self.episode_start[:kept],
            "episode_end": self.episode_end[:kept],
            "next_index": np.int64(self.next_index),
            "current_start": np.int64(self._current_start),
        }
        if self._store is None:
            state["frames"] = self.frames[:kept]
        else:
            state["frame_codec"] = self.frame_codec
            state.update({f"frame_store/{k}": v for k, v in self._store.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        codec = str(state.get("frame_codec", "none"))
        if codec != self.frame_codec:
            raise ValueError(
                f"replay state was saved with frame_codec={codec!r}; this replay uses frame_codec={self.frame_codec!r}"
            )
        kept = len(state["rewards"])
        for name in ("actions", "rewards", "discounts", "episode_start", "episode_end"):
            getattr(self, name)[:kept] = state[name]
        if self._store is None:
            self.frames[:kept] = state["frames"]
        else:
            prefix = "frame_store/"
            self._store.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        self.next_index = int(state["next_index"])
        self._current_start = int(state["current_start"])


class _DeltaFrameStore:
    """Lossless store of uint8 frames: keyframes plus compressed differences to the previous frame.

    Frame ``g`` (a global index) is a *keyframe* when it starts an episode or when
    ``g % KEYFRAME_INTERVAL == 0``.  A keyframe's payload is the frame with its
    first and third channel replaced by their difference to the second (for
    3-channel frames, ``(R - G, G, B - G)`` mod 256, which compresses ≈ 20% better
    than RGB); any other frame's payload is ``frame - previous frame`` (uint8,
    mod 256), and its *depth* is the number of frames back to its keyframe
    (< ``KEYFRAME_INTERVAL``).  Payloads are compressed in lz4's block format at
    high-compression level ``LZ4_LEVEL``: 2-8 µs to decode an 84×84×3 payload,
    0.2-3 ms to encode one.  Alternatives measured on the same five DMC tasks
    when this was chosen: zstd level 1 stores 10-20% less on the hard tasks but
    decodes ≈ 3× slower (50-75 ms per 256-batch on walker and quadruped);
    keyframes every 8 steps sample ≈ 20% faster than every 16 but hold ≈ 2% more
    of the raw size on quadruped_run (41% instead of 39%).

    A payload that does not shrink is stored as it is (a blob exactly
    ``frame_bytes`` long is such a raw payload; compressed blobs are shorter).

    Blobs are appended to *chunks* of ``chunk_frames`` consecutive global indices
    (a multiple of the keyframe interval, so a frame's keyframe is always in its
    own chunk).  The open chunk is a ``bytearray``; a full chunk is frozen into
    one ``bytes`` object; a chunk is dropped as soon as the ring has overwritten
    all of its frames.  Memory therefore grows with what is stored and never
    holds more than one chunk of overwritten frames.  Per-chunk offsets (uint32)
    and depths (uint8) live in arrays of ``capacity // chunk_frames + 3`` rows
    (≈ 5 bytes per replay slot), reused as chunks come and go.

    ``gather`` decodes every frame a batch needs once, in increasing index order:
    the distinct frames of the batch and the chain links from each one's
    keyframe (≈ 13.5 frames per sampled transition for stacks of 3, n-step 3 and
    keyframes every 16).  Each difference is added in place onto one work frame
    that stays in cache; the frames the batch asks for are copied out of it.
    """

    def __init__(
        self, capacity: int, frame_shape: tuple[int, ...], codec: str, keyframe_interval: int = KEYFRAME_INTERVAL
    ):
        self.frame_shape = tuple(frame_shape)
        self.frame_bytes = int(np.prod(frame_shape))
        self.codec = codec
        self.keyframe_interval = k = int(keyframe_interval)
        if not 1 <= k <= 255:
            raise ValueError(f"keyframe_interval={k}: must be in [1, 255]")
        # Chunks of ≈ capacity / 16 frames (bounds the overwritten frames still held), 32 keyframe periods at most.
        self.chunk_frames = k * max(1, min(32, capacity // (16 * k)))
        self.capacity = capacity
        rows = capacity // self.chunk_frames + 3  # more than the chunks ever held at once
        self.offsets = np.zeros((rows, self.chunk_frames + 1), dtype=np.uint32)
        self.depth = np.zeros((rows, self.chunk_frames), dtype=np.uint8)
        self.chunks: list[bytes | bytearray | None] = [None] * rows  # row = chunk id % rows
        self.first_chunk = 0  # id of the oldest chunk held
        self.next_index = 0
        self.previous = np.zeros(self.frame_bytes, dtype=np.uint8)  # the last frame added, raw
        # (R - G, G, B - G) on keyframes of channel-first 3-channel frames: plane size, else 0.
        self.plane = self.frame_bytes // 3 if len(self.frame_shape) == 3 and self.frame_shape[0] == 3 else 0
        if codec != "lz4":
            raise ValueError(f"unknown frame codec {codec!r}")
        import lz4.block

        size = self.frame_bytes
        self._compress = (
            functools.partial(lz4.block.compress, mode="high_compression", compression=LZ4_LEVEL, store_size=False)
            if LZ4_LEVEL > 0
            else functools.partial(lz4.block.compress, mode="default", store_size=False)
        )
        self._decompress = functools.partial(lz4.block.decompress, uncompressed_size=size)

    # ------------------------------------------------------------------ write
    def add(self, g: int, frame: np.ndarray, first: bool) -> None:
        if g != self.next_index:
            raise ValueError(f"frames must arrive in order: expected index {self.next_index}, got {g}")
        flat = np.ascontiguousarray(frame, dtype=np.uint8).reshape(-1)
        if flat.size != self.frame_bytes:
            raise ValueError(f"frame of shape {np.shape(frame)} does not match {self.frame_shape}")
        c, i = divmod(g, self.chunk_frames)
        row = c % len(self.chunks)
        if i == 0:
            if c > 0:
                before = (c - 1) % len(self.chunks)
                previous_chunk = self.chunks[before]
                assert previous_chunk is not None  # the chunk just finished: held until the ring passes it
                self.chunks[before] = bytes(previous_chunk)  # frozen at its exact size
            self._drop_overwritten(g + 1)
            assert self.chunks[row] is None
            self.chunks[row] = bytearray()
            self.offsets[row, 0] = 0
        if first or g % self.keyframe_interval == 0:
            depth = 0
            payload = flat.copy()
            p = self.plane
            if p:
                payload[:p] -= flat[p : 2 * p]
                payload[2 * p :] -= flat[p : 2 * p]
        else:
            depth = int(self.depth[row, i - 1]) + 1  # i > 0: a chunk starts with a keyframe
            payload = np.subtract(flat, self.previous)
        raw = payload.tobytes()
        blob = self._compress(raw)
        if len(blob) >= self.frame_bytes:
            blob = raw
        chunk = self.chunks[row]
        chunk += blob
        self.offsets[row, i + 1] = len(chunk)
        self.depth[row, i] = depth
        self.previous[:] = flat
        self.next_index = g + 1
        self._drop_overwritten(self.next_index)

    def _drop_overwritten(self, next_index: int) -> None:
        oldest = next_index - self.capacity  # the ring has overwritten every frame below this index
        while (self.first_chunk + 1) * self.chunk_frames <= oldest:
            self.chunks[self.first_chunk % len(self.chunks)] = None
            self.first_chunk += 1

    @property
    def data_nbytes(self) -> int:
        """Bytes of the chunks held (``sys.getsizeof``: object header and a bytearray's spare room included)
        plus the raw copy of the previous frame."""
        return sum(sys.getsizeof(c) for c in self.chunks if c is not None) + self.previous.nbytes

    @property
    def index_nbytes(self) -> int:
        """The preallocated per-chunk offsets and depths and the chunk list (≈ 5 bytes per replay slot)."""
        return self.offsets.nbytes + self.depth.nbytes + sys.getsizeof(self.chunks)

    # ------------------------------------------------------------------- read
    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Frames at global ``indices`` (any shape, all held): an array of shape ``indices.shape + frame_shape``."""
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        wanted, inverse = np.unique(flat, return_inverse=True)
        n_rows, cf = len(self.chunks), self.chunk_frames
        depth = self.depth[(wanted // cf) % n_rows, wanted % cf].astype(np.int64)
        # Every frame from each wanted frame's keyframe up to it, each once, in increasing order.
        lengths = depth + 1
        steps = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        needed = np.unique(np.repeat(wanted - depth, lengths) + steps)
        rows_a, cols = (needed // cf) % n_rows, needed % cf
        starts = self.offsets[rows_a, cols].tolist()
        stops = self.offsets[rows_a, cols + 1].tolist()
        depths = self.depth[rows_a, cols].tolist()
        rows = rows_a.tolist()
        # Where each needed frame goes among the wanted ones (-1: only a link of a chain).
        slot = np.searchsorted(wanted, needed)
        slot[wanted[np.minimum(slot, len(wanted) - 1)] != needed] = -1
        slots = slot.tolist()
        out = _scratch(len(wanted), self.frame_bytes)
        current = np.empty(self.frame_bytes, dtype=np.uint8)  # the frame being decoded (stays in cache)
        chunks, size, p = self.chunks, self.frame_bytes, self.plane
        decompress, frombuffer, add, uint8 = self._decompress, np.frombuffer, np.add, np.uint8
        views: dict[int, Any] = {}  # frozen chunks: zero-copy views; the open one is sliced (copied) directly
        for m in range(len(needed)):
            r = rows[m]
            view = views.get(r)
            if view is None:
                chunk = chunks[r]
                view = views[r] = memoryview(chunk) if isinstance(chunk, bytes) else chunk
            blob = view[starts[m] : stops[m]]
            payload = frombuffer(blob if len(blob) == size else decompress(blob), uint8)
            if depths[m]:
                add(current, payload, out=current)  # needed[m - 1], decoded just before, is frame needed[m] - 1
            else:
                current[:] = payload
                if p:
                    current[:p] += current[p : 2 * p]
                    current[2 * p :] += current[p : 2 * p]
            if slots[m] >= 0:
                out[slots[m]] = current
        return out[inverse].reshape(*np.shape(indices), *self.frame_shape)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The chunks held, concatenated, with their sizes, offsets and depths; all numpy (codec: a str)."""
        held = range(self.first_chunk, -(-self.next_index // self.chunk_frames))
        rows = [c % len(self.chunks) for c in held]
        chunks: list[bytes | bytearray] = []
        for r in rows:
            chunk = self.chunks[r]
            assert chunk is not None  # rows of held chunks
            chunks.append(chunk)
        return {
            "codec": self.codec,
            "capacity": np.int64(self.capacity),
            "keyframe_interval": np.int64(self.keyframe_interval),
            "chunk_frames": np.int64(self.chunk_frames),
            "first_chunk": np.int64(self.first_chunk),
            "next_index": np.int64(self.next_index),
            "chunk_sizes": np.array([len(chunk) for chunk in chunks], dtype=np.int64),
            "data": np.frombuffer(b"".join(chunks), dtype=np.uint8),
            "offsets": self.offsets[rows],
            "depth": self.depth[rows],
            "previous": self.previous.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("codec", "capacity", "keyframe_interval", "chunk_frames"):
            saved = str(state[name]) if name == "codec" else int(state[name])
            if saved != getattr(self, name):
                raise ValueError(
                    f"replay frames were saved with {name}={saved!r}, this replay has {getattr(self, name)!r}"
                )
        self.chunks[:] = [None] * len(self.chunks)
        self.first_chunk = int(state["first_chunk"])
        self.next_index = int(state["next_index"])
        data = np.asarray(state["data"], dtype=np.uint8)
        bounds = np.concatenate([[0], np.cumsum(state["chunk_sizes"])]).astype(np.int64).tolist()
        for j in range(len(bounds) - 1):
            r = (self.first_chunk + j) % len(self.chunks)
            blob = data[bounds[j] : bounds[j + 1]].tobytes()  # chunk by chunk: no second copy of the whole store
            is_open = j == len(bounds) - 2 and self.next_index % self.chunk_frames != 0
            self.chunks[r] = bytearray(blob) if is_open else blob
            self.offsets[r] = state["offsets"][j]
            self.depth[r] = state["depth"][j]
        self.previous[:] = state["previous"]


_SCRATCH = threading.local()


def _scratch(n: int, frame_bytes: int) -> np.ndarray:
    """A per-thread (n, frame_bytes) work array for the distinct frames of a batch (≈ 32 MB for 256 pixel
    transitions), kept between batches so that decoding does not fault in fresh pages each time, and shared by
    every replay of the thread (a thread decodes one batch at a time)."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = buffers.get(frame_bytes)
    if buffer is None or len(buffer) < n:
        buffer = buffers[frame_bytes] = np.empty((n, frame_bytes), dtype=np.uint8)
    return buffer[:n]
