"""The Kafka side of ``ticklet serve``: one consumer of the output topic, and short-lived range readers.

The consumer runs in its own thread; the readers of offset ranges serve the
stream clients that resume further back than the server's buffer.

The consumer is built when the server starts (never at import). It joins no
group rebalance: every partition is assigned to it, starting
``backfill`` records before each partition's end, and no offset is
committed, so every server process reads the whole topic's recent history
and then follows it. It hands what it decodes to the event loop in
batches, through ``post`` (``loop.call_soon_threadsafe``): what the consumer hands over
while the loop is busy waits in one queue, and the loop takes all of it in
one step, consecutive batches joined, so a busy loop sends fewer and larger
messages to its clients instead of falling behind. At most
``max_in_flight`` batches wait, so a loop that cannot keep up slows the
consumer down (Kafka keeps the records) instead of queuing without bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import chain, groupby
from typing import Any, Optional

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sinks.kafka import error_text, rdkafka_logger
from ticklet.serve.state import BadRecord, Entry, decode_record

__all__ = ["Feed", "RangeReader", "consumer_config", "reader_config", "release_memory"]

log = logging.getLogger(__name__)

#: malloc_trim of the C library (glibc), or None (another libc).
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def release_memory() -> None:
    """Give the memory that the process has freed back to the system (glibc's malloc_trim).

    What a closed consumer's threads freed otherwise stays in their malloc
    arenas, counted in the RSS.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def consumer_config(brokers: list[str], group_id: str, client_config: Optional[dict[str, Any]] = None
                    ) -> dict[str, Any]:
    """The librdkafka settings of the server's consumers (security settings from ``client_config``)."""
    return {"bootstrap.servers": ",".join(brokers), "group.id": group_id, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
            "reconnect.backoff.max.ms": 2000, "logger": rdkafka_logger(), **(client_config or {})}


def reader_config(config: dict[str, Any], prefetch_kb: int) -> dict[str, Any]:
    """``config`` for a :class:`RangeReader`, with what librdkafka fetches ahead bounded to about ``prefetch_kb`` KiB.

    librdkafka's defaults are 64 MiB queued, 50 MiB a fetch, 100,000
    messages a partition, for each consumer.

    >>> c = reader_config({"group.id": "g"}, 1024)
    >>> c["queued.max.messages.kbytes"], c["fetch.max.bytes"], c["max.partition.fetch.bytes"]
    (1024, 1048576, 1048576)
    """
    size = prefetch_kb * 1024
    # fetch.max.bytes is raised to message.max.bytes (1,000,000 by default) when below it
    return {**config, "queued.max.messages.kbytes": prefetch_kb, "queued.min.messages": 1000,
            "fetch.max.bytes": size, "max.partition.fetch.bytes": size, "message.max.bytes": min(size, 1_000_000)}


def _entries(msgs: list[Any], bad: Counter, on_bad: Optional[Callable[[str], None]] = None) -> list[Entry]:
    out = []
    for m in msgs:
        if m.error():
            continue
        try:
            out.append(decode_record(m.value(), m.partition(), m.offset(), m.timestamp()[1]))
        except BadRecord as ex:
            bad[ex.reason] += 1
            if on_bad is not None:
                on_bad(ex.reason)
    return out


class Feed:
    """Follow ``topic`` and hand its records to the event loop.

    Parameters
    ----------
    config
        Consumer settings (:func:`consumer_config`).
    topic
        The output topic.
    backfill
        Records read again from the end of each partition at start.
    post
        Schedules ``fn(arg)`` on the event loop, in call order (thread-safe).
    on_begin
        Called (on the loop) with ``{partition: first offset}`` when
        partitions are assigned.
    on_batch
        Called (on the loop) with each batch of decoded entries.
    on_ready
        Called (on the loop) once every partition has been read up to its
        end as it was at start, right after the batch that got there.
    on_bad
        Called (in the consumer's thread) with the reason of each value
        that is not a record served (:class:`~ticklet.serve.state.BadRecord`).
    on_fail
        Called (on the loop) with the reason when the consumer stops on an
        error it cannot go on from (not on :meth:`stop`); it is logged
        with its traceback first.
    """

    def __init__(self, config: dict[str, Any], topic: str, backfill: int,
                 post: Callable[[Callable[[Any], None], Any], object],
                 on_begin: Callable[[dict[int, int]], None], on_batch: Callable[[list[Entry]], None],
                 on_ready: Callable[[Any], None], on_bad: Optional[Callable[[str], None]] = None,
                 on_fail: Optional[Callable[[str], None]] = None, max_batch: int = 2000, max_in_flight: int = 8):
        self._config, self._topic, self._backfill = config, topic, backfill
        self._post, self._on_begin, self._on_batch, self._on_ready = post, on_begin, on_batch, on_ready
        self._on_bad, self._on_fail = on_bad, on_fail
        self._max_batch = max_batch
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._queue: deque[tuple[Callable[[Any], None], Any]] = deque()  # calls for the loop, in order
        self._lock = threading.Lock()
        self._scheduled = False  # a drain of the queue is posted and has not started
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.bad: Counter = Counter()  # refused values by reason
        self.consumed = 0
        self.positions: dict[int, int] = {}  # partition -> next offset to read
        self.targets: dict[int, int] = {}  # partition -> its end at start (ready once reached)
        self.lag = 0  # records behind the partitions' ends (librdkafka's cached watermarks)
        self.ready = False
        self.error = ""  # the client's last error, for /readyz
        self.alive = False

    def start(self) -> None:
        """Start consuming, in a daemon thread of its own."""
        self._thread = threading.Thread(target=self._run, name="ticklet-serve-feed", daemon=True)
        self.alive = True
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop consuming, waiting at most ``timeout_s`` for the thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _call(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Have the loop call ``fn(arg)`` after what is queued already."""
        with self._lock:
            self._queue.append((fn, arg))
            if self._scheduled:
                return
            self._scheduled = True
        self._post(self._drain, None)

    def _deliver(self, entries: list[Entry]) -> None:
        self._slots.acquire()
        self._call(self._on_batch, entries)

    def _drain(self, _: Any = None) -> None:
        """(On the loop) make the queued calls in order, consecutive batches as one."""
        with self._lock:
            calls = list(self._queue)
            self._queue.clear()
            self._scheduled = False
        n_batches = sum(1 for fn, _ in calls if fn is self._on_batch)
        try:
            for is_batch, run in groupby(calls, key=lambda call: call[0] is self._on_batch):
                if is_batch:
                    batches = [arg for _, arg in run]
                    self._on_batch(batches[0] if len(batches) == 1 else list(chain.from_iterable(batches)))
                else:
                    for fn, arg in run:
                        fn(arg)
        finally:
            for _ in range(n_batches):
                self._slots.release()

    def _on_error(self, err: KafkaError) -> None:
        self.error = str(err.str())

    def _assign(self, c: Consumer) -> bool:
        """Assign every partition of the topic, ``backfill`` records before its end; False when it cannot yet.

        False while the topic does not exist or is not served yet (just
        created: a partition without a leader, whose offsets the broker
        cannot give), and the consumer tries again.
        """
        try:
            md = c.list_topics(self._topic, timeout=5.0).topics.get(self._topic)
        except KafkaException as ex:
            self.error = error_text(ex)
            return False
        if md is None or md.error is not None or not md.partitions:
            self.error = f"topic {self._topic!r} does not exist yet"
            return False
        if any(pm.leader < 0 or pm.error is not None for pm in md.partitions.values()):
            self.error = f"topic {self._topic!r} has partitions without a leader yet"
            return False
        ends: dict[int, tuple[int, int]] = {}
        try:
            for p in sorted(md.partitions):
                ends[p] = c.get_watermark_offsets(TopicPartition(self._topic, p), timeout=10.0)
        except KafkaException as ex:
            self.error = error_text(ex)
            return False
        begin = {p: max(lo, hi - self._backfill) for p, (lo, hi) in ends.items()}
        self.targets.update({p: hi for p, (_, hi) in ends.items()})
        self.positions.update(begin)
        c.assign([TopicPartition(self._topic, p, off) for p, off in begin.items()])
        self._call(self._on_begin, begin)
        self.error = ""
        log.info("following %r from %s (ends %s)", self._topic, begin, self.targets)
        return True

    def _caught_up(self) -> bool:
        return all(self.positions.get(p, 0) >= end for p, end in self.targets.items())

    def _new_partitions(self, c: Consumer) -> None:
        try:
            md = c.list_topics(self._topic, timeout=5.0).topics.get(self._topic)
        except KafkaException:
            return
        new = sorted(set(md.partitions) - set(self.positions)) if md is not None and md.partitions else []
        if new:
            c.incremental_assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in new])
            for p in new:
                self.positions[p] = 0
            self._call(self._on_begin, dict.fromkeys(new, 0))
            log.info("partitions %s of %r appeared: reading them from the beginning", new, self._topic)

    def _run(self) -> None:
        c: Optional[Consumer] = None
        try:
            c = Consumer({**self._config, "error_cb": self._on_error})
            while not self._stop.is_set() and not self._assign(c):
                self._stop.wait(1.0)
            next_check = time.monotonic() + 1.0
            next_meta = time.monotonic() + 30.0
            while not self._stop.is_set():
                m = c.poll(0.2)
                now = time.monotonic()
                if m is not None:
                    msgs = [m, *c.consume(self._max_batch, 0)]
                    for x in msgs:
                        err, p, off = x.error(), x.partition(), x.offset()
                        if err is None:
                            if p is not None and off is not None:  # a message (not an error) has both
                                self.positions[p] = off + 1
                        elif err.code() != KafkaError._PARTITION_EOF:
                            self.error = str(err.str())
                    entries = _entries(msgs, self.bad, self._on_bad)
                    self.consumed += len(entries)
                    if entries:
                        self._deliver(entries)
                if not self.ready and self._caught_up():
                    self.ready = True
                    self._call(self._on_ready, None)
                    log.info("caught up with %r", self._topic)
                if now >= next_check:
                    next_check = now + 1.0
                    lag = 0
                    for p, pos in self.positions.items():
                        with contextlib.suppress(KafkaException):
                            lag += max(0, c.get_watermark_offsets(TopicPartition(self._topic, p), cached=True)[1]
                                       - pos)
                    self.lag = lag
                if now >= next_meta:
                    next_meta = now + 30.0
                    self._new_partitions(c)
        except Exception as ex:
            log.exception("the Kafka consumer of %r stopped", self._topic)
            self.error = error_text(ex) if isinstance(ex, KafkaException) else f"{type(ex).__name__}: {ex}"
            self.alive = False
            if self._on_fail is not None:
                self._post(self._on_fail, self.error)
        finally:
            self.alive = False
            if c is not None:
                c.close()


class RangeReader:
    """The records of offsets ``[lo, hi)`` of some partitions of ``topic``, read chunk by chunk.

    They are read by a consumer of its own (:func:`reader_config`).
    :meth:`chunk` takes what the consumer has fetched without waiting, so
    it is called on the event loop (the caller waits a little when it gets
    nothing): decoding in other threads would make the loop wait for the
    GIL at every step. Build it and :meth:`close` it in a worker thread
    (both wait on librdkafka).
    """

    def __init__(self, config: dict[str, Any], topic: str, ranges: dict[int, tuple[int, int]],
                 timeout_s: float = 30.0):
        self._left = {p: hi for p, (lo, hi) in ranges.items() if hi > lo}
        self._c = Consumer({**config, "enable.partition.eof": True})
        self._c.assign([TopicPartition(topic, p, ranges[p][0]) for p in self._left])
        self._timeout = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._open = True
        self.bad: Counter = Counter()

    @property
    def done(self) -> bool:
        """Whether every partition has been read up to the end of its range."""
        return not self._left

    def chunk(self, n: int = 1000) -> list[Entry]:
        """The next records fetched, at most ``n``, in offset order per partition.

        Empty when none has arrived yet (or once done); a
        :class:`TimeoutError` when none has for ``timeout_s``.
        """
        if not self._open or not self._left:
            return []
        out: list[Any] = []
        for m in self._c.consume(n, 0):
            p, err, off, topic = m.partition(), m.error(), m.offset(), m.topic()
            if p is None or p not in self._left:
                continue
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    del self._left[p]  # the range reaches past what the partition holds
                continue
            if off is None or topic is None:  # never so for a message (not an error)
                continue
            if off >= self._left[p]:
                del self._left[p]
                self._c.incremental_unassign([TopicPartition(topic, p)])
                continue
            out.append(m)
            if off + 1 >= self._left[p]:
                del self._left[p]
                self._c.incremental_unassign([TopicPartition(topic, p)])
        if out:
            self._deadline = time.monotonic() + self._timeout
        elif self._left and time.monotonic() > self._deadline:
            raise TimeoutError(f"no records of partitions {sorted(self._left)} within {self._timeout:g} s")
        return _entries(out, self.bad)

    def close(self) -> None:
        """Close the consumer (once), when nothing reads it any more."""
        if self._open:
            self._open = False
            self._c.close()
