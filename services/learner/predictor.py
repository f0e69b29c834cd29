"""Central, batched inference: one forward pass for the observations of many pools.

Every Act stream calls `predict(observations)` and blocks; a single thread gathers the
waiting requests into one batch and runs the model once. A batch closes when it holds
`max_batch` observations, when every connected stream is waiting (nobody else can
come), or `max_wait` seconds after its first request, whichever comes first. A request
larger than `max_batch` runs alone, whole. With a single connected stream there is
nothing to batch: its requests run in its own thread, saving two thread hand-offs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class PredictorStopped(RuntimeError):
    """The predictor was stopped while a request waited."""


class Predictor:
    """Batches `predict` calls from many threads into calls of `forward` (logits, values)."""

    def __init__(
        self,
        forward: Forward,
        max_batch: int,
        max_wait: float,
        waiting_streams_limit: Callable[[], int] = lambda: 1 << 30,
        on_batch: Callable[[int], None] = lambda size: None,
    ):
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.streams = waiting_streams_limit  # connected streams: a batch needs no more
        self.on_batch = on_batch
        self._requests: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="predictor", daemon=True)
        self._thread.start()

    def predict(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits [N, A], values [N]) for observations [N, ...]; blocks until computed."""
        if self._stopped.is_set():
            raise PredictorStopped("predictor stopped")
        if self.streams() <= 1:
            logits, values = self.forward(observations)
            self.on_batch(len(observations))
            return logits, values
        future: Future = Future()
        self._requests.put((observations, future))
        return future.result()

    def stop(self) -> None:
        self._stopped.set()
        self._requests.put(None)
        self._thread.join(10)

    def _gather(self) -> list[tuple[np.ndarray, Future]]:
        first = self._requests.get()
        if first is None:
            return []
        batch = [first]
        size = len(first[0])
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch and len(batch) < self.streams():
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._requests.get(timeout=remaining)
                    if remaining > 0
                    else self._requests.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                self._requests.put(None)
                break
            if size + len(item[0]) > self.max_batch:
                self._requests.put(item)  # starts the next batch
                break
            batch.append(item)
            size += len(item[0])
        return batch

    def _run(self) -> None:
        while not self._stopped.is_set():
            batch = self._gather()
            if not batch:
                break
            try:
                obs = batch[0][0] if len(batch) == 1 else np.concatenate([b[0] for b in batch])
                logits, values = self.forward(obs)
            except Exception as e:  # noqa: BLE001 - handed to every waiting stream
                for _, future in batch:
                    future.set_exception(e)
                continue
            self.on_batch(len(obs))
            start = 0
            for observations, future in batch:
                stop = start + len(observations)
                future.set_result((logits[start:stop], values[start:stop]))
                start = stop
        while True:  # fail whoever is still waiting
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(PredictorStopped("predictor stopped"))
