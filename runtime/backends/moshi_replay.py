"""Where a moved conversation's token history is replayed through the LM transformer: one
batch-1 copy of the transformer's per-slot state (the *replay row*), and on a GPU the LM's
forward over that row captured as CUDA graphs, one per chunk length.

Why graphs: eager, a chunk of replay costs 55-65 ms on an H100 whatever its length up to 128
steps (bench/results/move_state_moshi_h100.json): 32 layers of small kernels, each launched
from Python. A busy pod has 20-40 ms between its frames, so an eager chunk made the receiving
pod's own conversations late. A graph launches the same kernels in one call, and a batch-1
forward then costs about what reading the weights once does.

Why a row of its own and not views of the receiving slot's row: a graph replays kernels on
the addresses it was captured with, so views of the slot would need a graph per slot and chunk
length, captured while conversations wait. With one row, the graphs are captured once at
start; a replay copies the slot's row in (:meth:`ReplayRow.hold`), runs its chunks, and copies
the row back when it is done (a device copy of ~1.5 GiB at 240 s in bf16, about a
millisecond). The row costs one conversation's KV cache, which ``session_bytes`` and the
planner count. Imports into different slots take turns: the row goes back to its slot before
another slot's replay takes it.

The row's tensors are the per-slot fields of moshi's attention and transformer states
(``moshi_rows``); every one of them holds the slot's step count or its cache, so a copy in and
out is the whole of what a replay reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from moshi.modules.streaming import State
from moshi.modules.transformer import RingKVCache, _LayerState, _MHAState, _TransformerState
from moshi.utils.compile import no_compile

from voicefleet.runtime.backends.kv_fp8 import Fp8RingCache
from voicefleet.runtime.backends.moshi_rows import RowField, require_per_row
from voicefleet.runtime.backends.slot_state import Array, SlotStateError

# (a per-slot field of the live batch, the replay row's batch-1 copy of it)
_Pair = tuple[RowField, torch.Tensor]


class ReplayRow:
    """A batch-1 streaming state of ``lm.transformer`` that replays run on, owned by at most
    one slot at a time. ``chunks``: the chunk lengths captured as CUDA graphs (none on the
    CPU, where any length runs eagerly)."""

    def __init__(self, lm: Any, forward_text: Any, *, max_chunk: int, graphs: bool) -> None:
        self._transformer = lm.transformer
        self._forward_text = forward_text
        self._streams = int(lm.num_codebooks)
        self.device: torch.device = lm.device
        self._pairs: list[_Pair] = []
        self.states: dict[str, State] = {}
        for name, state in lm.transformer.get_streaming_state().items():
            self.states[name] = self._copy_of(state, name)
        self.owner: int | None = None
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if graphs:
            self._capture_all(max_chunk)

    @property
    def chunks(self) -> list[int]:
        return sorted(self._graphs)

    def chunk(self, wanted: int) -> int:
        """The length of the next chunk for ``wanted`` (> 0) steps: with graphs, the longest
        captured length that fits; eagerly, all of them."""
        if not self._graphs:
            return wanted
        return max(length for length in self._graphs if length <= wanted)

    # --- whose row it is -------------------------------------------------------------------
    def hold(self, slot: int) -> None:
        """Make the row ``slot``'s: the previous owner's replay so far goes back to its own
        row first, then ``slot``'s row is copied in."""
        if self.owner == slot:
            return
        self.give_back()
        for field, copy in self._pairs:
            copy.copy_(field.tensor().narrow(field.dim, slot, 1))
        self.owner = slot

    def give_back(self) -> None:
        """Copy the row into its owner's row of the batch (its replay so far), and free it."""
        if self.owner is None:
            return
        for field, copy in self._pairs:
            field.tensor().narrow(field.dim, self.owner, 1).copy_(copy)
        self.owner = None

    def forget(self, slot: int) -> None:
        """``slot``'s conversation ended or is replaced: what the row holds of it is dropped,
        never copied back over the slot's next conversation."""
        if self.owner == slot:
            self.owner = None

    # --- running a chunk -------------------------------------------------------------------
    def run(self, tokens: torch.Tensor) -> None:
        """The LM transformer over ``tokens`` (``[1, streams, T]``, ``T`` from :meth:`chunk`),
        writing the row's KV cache and positions."""
        length = int(tokens.shape[2])
        captured = self._graphs.get(length)
        if captured is not None:
            graph, static = captured
            static.copy_(tokens)
            graph.replay()
            return
        self._forward(tokens)

    def _forward(self, tokens: torch.Tensor) -> None:
        live = self._transformer.get_streaming_state()
        self._transformer.set_streaming_state(self.states)
        try:
            # Eager parts run uncompiled: moshi compiles a few functions (rope, gating) lazily
            # per input shape, and a compile takes seconds on the engine thread.
            with torch.no_grad(), no_compile():
                self._forward_text(tokens)
        finally:
            self._transformer.set_streaming_state(live)

    def _capture_all(self, max_chunk: int) -> None:
        """Graphs for every power of two up to ``max_chunk``: any history is then replayed in
        chunks of at most ``max_chunk`` with fewer than log2(max_chunk) short ones at its
        end. They share one memory pool (they never run at once)."""
        pool = torch.cuda.graph_pool_handle()
        length = 1
        while length <= max_chunk:
            self._graphs[length] = self._capture(length, pool)
            length *= 2

    def _capture(self, length: int, pool: Any) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        static = torch.zeros((1, self._streams, length), dtype=torch.long, device=self.device)
        # Warm up on a side stream first (PyTorch's rule for capture: lazy initialisations
        # and cuBLAS workspaces must not happen inside it). What the warm-up writes into the
        # row is overwritten by the next hold().
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._forward(static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the event loop's thread may touch CUDA (metrics) meanwhile.
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            self._forward(static)
        return graph, static

    # --- the batch-1 copy ------------------------------------------------------------------
    def _copy_of(self, state: State, name: str) -> State:
        device = state.device
        if isinstance(state, _MHAState):
            if state.kv_cache is None:
                raise SlotStateError(f"attention at {name} has no KV cache to rebuild")
            require_per_row(state.kv_cache, name)
            offset = self._own(state, "offset", 0)
            live = state.kv_cache
            if isinstance(live, Fp8RingCache):  # --kv-cache-dtype fp8
                fp8 = Fp8RingCache(
                    self._own(live, "cache", 1),
                    self._own(live, "scales", 1),
                    self._own(live, "end_offset", 0),
                )
                return _MHAState(1, device, fp8, offset=offset, offset_cpu=0)
            cache = RingKVCache.__new__(RingKVCache)
            cache.capacity = live.capacity
            cache.respect_exec_mask = True
            cache.cache = self._own(live, "cache", 1)
            cache.end_offset = self._own(live, "end_offset", 0)
            return _MHAState(1, device, cache, offset=offset, offset_cpu=0)
        if isinstance(state, _TransformerState):
            return _TransformerState(1, device, offsets=self._own(state, "offsets", 0))
        if isinstance(state, _LayerState):
            return _LayerState(1, device)
        raise SlotStateError(
            f"moshi's streaming state {type(state).__name__} (at {name or 'the root'}) is "
            "unknown to voicefleet: conversations on this moshi version cannot be moved"
        )

    def _own(self, owner: Any, attr: str, dim: int) -> torch.Tensor:
        """A batch-1 tensor shaped like one row of ``owner.attr``, paired with that field
        for copies."""
        field = RowField(owner, attr, dim)
        copy = field.tensor().narrow(dim, 0, 1).clone()
        self._pairs.append((field, copy))
        return copy


@dataclass
class Replay:
    """A slot's token history going through the LM transformer, in chunks, on the replay
    row; the slot's row of the batch has it once :attr:`left` is 0."""

    row: ReplayRow
    slot: int
    tokens: torch.Tensor  # [1, streams, steps] on the model's device
    done: int = 0

    @classmethod
    def of(cls, row: ReplayRow, history: Array, slot: int) -> Replay:
        tokens = torch.from_numpy(history.astype(np.int64)).to(row.device).T[None]
        return cls(row, slot, tokens.contiguous())

    @property
    def left(self) -> int:
        return int(self.tokens.shape[2]) - self.done

    def step(self, max_steps: int) -> int:
        """Replay one chunk of at most ``max_steps`` steps; the steps still left."""
        wanted = min(max_steps, self.left)
        if wanted <= 0:
            return self.left
        count = self.row.chunk(wanted)
        self.row.hold(self.slot)
        self.row.run(self.tokens[:, :, self.done : self.done + count])
        self.done += count
        if self.left == 0:
            self.row.give_back()
        return self.left
