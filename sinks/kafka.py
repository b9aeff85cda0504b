"""Publish records to Kafka with an idempotent producer, failures reported.

The producer is built when the sink's parts are listed, at the start
(:meth:`KafkaRecordSink.list_parts`; never pickled), with
``enable.idempotence=true`` and ``acks=all``: librdkafka retries transient
errors without duplicating or reordering. A batch is handed to the producer,
which sends it in its own thread within ``linger.ms``; the dataflow does not
wait for the broker's acknowledgement there (a flush per batch held the
worker 4 to 9 ms per bar). It waits at each snapshot instead: the sink is a
:class:`~bytewax.outputs.FixedPartitionedSink` whose partition flushes in
:meth:`~bytewax.outputs.StatefulSinkPartition.snapshot`, so every record
written before a snapshot is on the broker before that snapshot can be
resumed from. A message that could not be delivered raises (at the next
batch or snapshot), so the dataflow stops instead of losing output, and a
restart from the last snapshot re-publishes it (at-least-once; see the
README on deduplication). The sink has one partition: one producer per
topic writes every record, in the order the worker that owns it receives
them.

A broker outage is ridden out: messages never time out in librdkafka
(``message.timeout.ms=0``) and the flush waits, with a growing wait between
checks and a log line at most every 30 s, for up to ``outage_timeout_s``
(:class:`Outage`). Past that the sink gives up with one clear error: it
raises :class:`KafkaOutageError`, or, in the dataflow, prints one line and
ends the process with status 75 (:data:`EXIT_KAFKA_OUTAGE`), so that a
restart resumes from the last snapshot. Nothing is dropped either way.

Records are sized for their topic. At build time the sink reads the topic's
``max.message.bytes`` (:func:`topic_limit`); the smaller of it and the
producer's ``message.max.bytes`` is the limit of a record batch, and the
producer batches within it. A record too large for it is cut to fit where
the sink has a ``shrink`` function (the dead-letter topic's:
:func:`sinks.records.fit_dead_letter` keeps the first bytes of the payload,
its whole size and its SHA-256); any other record too large stops the run
with one line (:class:`RecordTooLargeError`, or status 2 in the dataflow:
the topic must take larger records). Records the broker refuses as too
large all the same (its limit could not be read, or was lowered during the
run) are sent again, cut where they can be, with a producer made for the
limit read again (or half the one before, down to 1 KiB), after the records
that followed them.

Whether the brokers answer at all is asked by the code that connects, at
its start (:func:`check_reachable`: the dataflow with a Kafka input or
output, the collector, ``ticklet serve``; ``ticklet replay`` uses
:func:`kafka_unreachable`), never by reading the settings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, Optional

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from core.config import ConfigError, KafkaConfig
from sinks.fatal import EXIT_BAD_SETUP, EXIT_KAFKA_OUTAGE, stop_run
from sinks.ratelimit import rate_limited

__all__ = ["EXIT_KAFKA_OUTAGE", "KafkaOutageError", "KafkaRecordSink", "Outage", "RecordTooLargeError",
           "check_reachable", "ensure_topic", "error_text", "kafka_unreachable", "produce", "producer_config",
           "rdkafka_logger", "topic_limit"]

log = logging.getLogger(__name__)

#: librdkafka errors that mean "the broker cannot be reached now", not "this record is bad".
TRANSIENT = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
                       KafkaError._RESOLVE, KafkaError._MSG_TIMED_OUT, KafkaError._WAIT_COORD,
                       KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                       KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.LEADER_NOT_AVAILABLE,
                       KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT,
                       KafkaError.NETWORK_EXCEPTION, KafkaError.BROKER_NOT_AVAILABLE})


class KafkaOutageError(RuntimeError):
    """Kafka stayed unreachable for longer than the outage timeout."""


class RecordTooLargeError(RuntimeError):
    """A record larger than its topic takes, that cannot be cut to fit."""


#: librdkafka's default message.max.bytes, the producer's limit when its settings do not set one.
_MESSAGE_MAX_BYTES = 1_000_000
#: The smallest record batch limit the sink works down to when the broker refuses records as too large.
_MIN_LIMIT = 1024


def _room(limit: int) -> int:
    """The most bytes of key and value that one record may have in a record batch of at most ``limit`` bytes.

    The batch and record headers take less than 128 bytes, and lz4 adds at
    most 1/255 to what it cannot compress (measured: a record of 4,020
    random bytes with a 1-byte key fits a topic whose max.message.bytes is
    4096).

    >>> _room(1_000_000), _room(65536)
    (992060, 64896)
    """
    return limit - 128 - limit // 128


def rdkafka_logger(name: str = "ticklet.rdkafka", every_s: float = 30.0) -> logging.Logger:
    """The logger to pass to confluent-kafka clients (their ``logger`` setting), rate-limited.

    It passes librdkafka's own lines at most one of a kind (facility and
    client) every ``every_s`` seconds, instead of one per reconnect attempt.
    """
    return rate_limited(name, every_s)


class Outage:
    """Waiting out an unreachable broker, for one client.

    Call :meth:`waiting` after each attempt that did not get through: it
    returns how long to wait before the next (0.25 s, doubling up to 5 s), logs
    a line when the wait starts and then at most every ``log_every_s``, and,
    once ``timeout_s`` has passed since the first failed attempt, gives up:
    it raises :class:`KafkaOutageError`, or, with ``exit_process``, writes
    one line on stderr and ends the process with status 75 (no traceback: a
    restart resumes from the last snapshot). Call :meth:`over` when an
    attempt gets through.

    >>> t = [0.0]
    >>> o = Outage("writing to 'out'", timeout_s=10, clock=lambda: t[0])
    >>> [o.waiting("3 records waiting") for _ in range(3)]
    [0.25, 0.5, 1.0]
    >>> t[0] = 11.0
    >>> try:
    ...     o.waiting("3 records waiting")
    ... except KafkaOutageError as ex:
    ...     print(ex)
    Kafka unreachable for 11.0 s, longer than the outage timeout (10 s; TICKLET_KAFKA__OUTAGE_TIMEOUT_S) \
while writing to 'out': 3 records waiting
    """

    def __init__(self, what: str, timeout_s: float, *, exit_process: bool = False, log_every_s: float = 30.0,
                 first_wait_s: float = 0.25, max_wait_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.what, self.timeout_s, self.exit_process = what, timeout_s, exit_process
        self._log_every, self._first, self._max, self._clock = log_every_s, first_wait_s, max_wait_s, clock
        self.since: Optional[float] = None
        self._wait = first_wait_s
        self._logged: Optional[float] = None
        self._lock = threading.Lock()  # one Outage may serve the partitions of several workers

    def waiting(self, detail: str, started: Optional[float] = None) -> float:
        """Note a failed attempt (``detail``: what is held up); the seconds to wait before the next.

        ``started``: when the attempt began, on the same clock, if not now.
        """
        with self._lock:
            now = self._clock()
            if self.since is None:
                self.since, self._wait = (now if started is None else started), self._first
            down = now - self.since
            if down > self.timeout_s:
                self._give_up(f"Kafka unreachable for {down:.1f} s, longer than the outage timeout "
                              f"({self.timeout_s:g} s; TICKLET_KAFKA__OUTAGE_TIMEOUT_S) while {self.what}: {detail}")
            if self._logged is None or now - self._logged >= self._log_every:
                first = self._logged is None
                self._logged = now
                log.warning("Kafka unreachable %s %s: %s; retrying, for up to %g s",
                            "while" if first else f"for {down:.0f} s,", self.what, detail, self.timeout_s)
            wait, self._wait = self._wait, min(self._max, self._wait * 2)
            return min(wait, max(0.0, self.timeout_s - down) + 0.01)

    def over(self) -> None:
        """An attempt got through: the outage, if any, is over."""
        with self._lock:
            if self.since is not None and self._logged is not None:
                log.warning("Kafka reachable again after %.0f s; %s resumed", self._clock() - self.since, self.what)
            self.since = self._logged = None
            self._wait = self._first

    def _give_up(self, message: str) -> None:
        if self.exit_process:
            stop_run(f"{message}. Exiting with status {EXIT_KAFKA_OUTAGE}; run the same command again to resume from "
                     "the last snapshot.", EXIT_KAFKA_OUTAGE)
        raise KafkaOutageError(message)


def error_text(ex: KafkaException) -> str:
    """The message of a client's exception: librdkafka's own text when it carries a :class:`KafkaError`.

    >>> error_text(KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down")))
    'broker down'
    """
    err = ex.args[0] if ex.args else None
    return str(err.str()) if isinstance(err, KafkaError) else str(ex)


def is_transient(err: Any) -> bool:
    """Whether a librdkafka error (:class:`KafkaError`) means the cluster cannot be reached now (retry).

    Otherwise a request is wrong.
    """
    return err is not None and not err.fatal() and (err.retriable() or err.code() in TRANSIENT)


def producer_config(brokers: list[str], extra: Optional[dict[str, Any]] = None,
                    linger_ms: int = 1) -> dict[str, Any]:
    """Idempotent, acks=all producer settings."""
    cfg: dict[str, Any] = {
        "bootstrap.servers": ",".join(brokers),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "compression.type": "lz4",
    }
    cfg.update(extra or {})
    return cfg


def produce(producer: Producer, topic: str, value: bytes, key: bytes, *,
            on_delivery: Callable[[Any, Any], None], timestamp: int = 0, wait_s: float = 0.05) -> None:
    """Hand one message to ``producer``, waiting while its local queue is full.

    :meth:`Producer.produce` raises :class:`BufferError` when librdkafka's
    local queue is full; the producer is then polled for ``wait_s`` seconds,
    so that deliveries drain, and the message is handed over again, until it
    is accepted.

    Parameters
    ----------
    producer
        The producer (anything with confluent-kafka's ``produce``/``poll``).
    topic, value, key
        Where the message goes and what it is.
    on_delivery
        Delivery report callback ``(err, msg)``.
    timestamp
        Kafka timestamp in ms; 0: the producer's clock.
    wait_s
        How long to poll when the queue is full.

    Examples
    --------
    >>> from confluent_kafka import Producer
    >>> p = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0,  # no broker there
    ...               "queue.buffering.max.messages": 1, "message.timeout.ms": 100})
    >>> failed = []
    >>> for v in (b"1", b"2"):  # the second waits until the first times out and leaves the queue
    ...     produce(p, "ticks", v, b"k", on_delivery=lambda err, msg: failed.append(err is not None))
    >>> p.flush(10), failed
    (0, [True, True])
    """
    while True:
        try:
            producer.produce(topic, value, key, timestamp=timestamp, on_delivery=on_delivery)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(wait_s)


#: One line per kind of cut dead letter (topic), at most every 30 s.
_cut_log = rate_limited(f"{__name__}.cut", 30.0)


class _Partition(StatefulSinkPartition[tuple[bytes, bytes], None]):
    def __init__(self, config: dict[str, Any], topic: str, outage: Outage, patience_s: float = 5.0,
                 limit: Optional[int] = None, shrink: Optional[Callable[[bytes, int], Optional[bytes]]] = None,
                 exit_process: bool = False):
        self._topic = topic
        self._outage = outage
        self._patience = patience_s  # a flush this slow may be load, not an outage: no line before it
        self._failed: list[str] = []
        self._too_large: list[tuple[bytes, bytes]] = []  # refused by the broker as too large: to send again
        self._error = "none reported"  # the client's last error, for the log line
        self._config = config
        self._shrink = shrink
        self._exit = exit_process
        self._limit = self._room = 0
        self._p = self._producer(limit)

    def _producer(self, limit: Optional[int]) -> Producer:
        """A producer whose record batches fit in ``limit`` bytes and in its own message.max.bytes.

        ``limit`` is the topic's max.message.bytes (None: not known). Sets the
        limit and the room of one record.
        """
        own = int(self._config.get("message.max.bytes", _MESSAGE_MAX_BYTES))
        self._limit = own if limit is None else min(own, limit)
        self._room = _room(self._limit)
        batch = max(1, min(int(self._config.get("batch.size", _MESSAGE_MAX_BYTES)), self._room))
        return Producer({**self._config, "batch.size": batch, "error_cb": self._on_error})

    def _on_error(self, err: KafkaError) -> None:
        self._error = str(err.str())

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                self._too_large.append((msg.key() or b"", msg.value() or b""))
            else:
                self._failed.append(f"{err} (key {msg.key()!r})")

    def _fit(self, key: bytes, value: bytes) -> bytes:
        """``value``, cut to fit the room of one record (see ``shrink``), or the run stops (:meth:`_refuse`)."""
        fitted = None if self._shrink is None else self._shrink(value, self._room - len(key))
        if fitted is None:
            self._refuse(len(key) + len(value))
        _cut_log.warning("%s takes records of at most %d bytes: a dead letter of %d bytes was cut to %d (its raw_size "
                         "and raw_sha256 are the whole payload's)", self._topic, self._limit, len(value), len(fitted))
        return fitted

    def _refuse(self, size: int) -> NoReturn:
        """Stop: a record of ``size`` bytes cannot be made to fit the topic."""
        msg = (f"a record of {size} bytes does not fit in Kafka topic {self._topic!r}: it takes record batches of at "
               f"most {self._limit} bytes (the smaller of its max.message.bytes and the producer's message.max.bytes), "
               f"of which the batch's own headers take up to {self._limit - self._room}; raise the topic's "
               "max.message.bytes")
        if self._exit:
            stop_run(f"{msg}. The run stopped with status {EXIT_BAD_SETUP}; with recovery, the same command "
                     "then resumes from the last snapshot.", EXIT_BAD_SETUP)
        raise RecordTooLargeError(msg)

    def _held_up(self, left: int, started: float) -> float:
        return self._outage.waiting(f"{left} record(s) not yet delivered (last error: {self._error})", started)

    def _hand_over(self, key: bytes, value: bytes) -> None:
        """:meth:`Producer.produce`, waiting while librdkafka's queue is full.

        The record is cut to fit the topic where it must be.
        """
        if len(key) + len(value) > self._room:
            value = self._fit(key, value)
        t0 = None
        while True:
            try:
                self._p.produce(self._topic, value, key, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                t0 = time.monotonic() if t0 is None else t0
                waited = time.monotonic() - t0
                self._p.poll(self._held_up(len(self._p), t0) if waited > self._patience else 0.1)

    def _deliver(self) -> None:
        """Flush until every record is delivered; wait out an outage.

        What the broker refused as too large is sent again (:meth:`_again`);
        a record the broker refused otherwise raises.
        """
        while True:
            t0 = time.monotonic()
            left = self._p.flush(self._patience)
            while left and not self._failed:
                left = self._p.flush(self._held_up(left, t0))
            self._outage.over()
            if self._failed:
                failed, self._failed = self._failed, []
                msg = f"{len(failed)} message(s) to {self._topic!r} failed, {left} undelivered: {failed[:3]}"
                log.error(msg)
                raise KafkaException(msg)
            if not self._too_large:
                return
            self._again()

    def _again(self) -> None:
        """Hand again the records the broker refused as too large to a producer made for a lower limit.

        The topic takes less than this sink knew (its limit could not be read
        at the start, or it was lowered since). Read the limit again (half
        the one before if the broker does not say less, down to 1 KiB) and
        hand the records over again to a producer made for it, cut to fit
        where they must be.
        """
        refused, self._too_large = self._too_large, []
        limit = topic_limit(self._config, self._topic)
        if limit is None or limit >= self._limit:
            limit = self._limit // 2
        if limit < _MIN_LIMIT:
            self._refuse(max(len(k) + len(v) for k, v in refused))
        log.warning("Kafka topic %r refused %d record(s) as too large for it; sending them again in record batches "
                    "of at most %d bytes", self._topic, len(refused), limit)
        self._p = self._producer(limit)
        for key, value in refused:
            self._hand_over(key, value)

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        """Hand the records to the producer, which sends them in its own thread; no wait for the broker.

        The delivery reports so far are served: a failure raises here, and
        records refused as too large are sent again (:meth:`_deliver`).
        """
        for key, value in items:
            self._hand_over(key, value)
        self._p.poll(0)
        if self._failed or self._too_large:
            self._deliver()

    def snapshot(self) -> None:
        """Wait until every record written so far is delivered: a snapshot never gets ahead of the topic."""
        self._deliver()

    def close(self) -> None:
        self._deliver()


class KafkaRecordSink(FixedPartitionedSink[tuple[bytes, bytes], None]):
    """Write ``(key, value)`` byte pairs to ``topic`` with one producer, flushed at each snapshot.

    It takes them keyed (``(instrument, (key, value))``: :func:`dataflows.ops.encode_for_kafka`);
    its one partition is the topic's name.

    Parameters
    ----------
    topic
        Where the records go (created if missing, see :func:`ensure_topic`).
    config
        librdkafka producer settings (:func:`producer_config`).
    outage_timeout_s
        Longest time to wait for an unreachable broker (see :class:`Outage`);
        records are never dropped meanwhile.
    exit_process
        Past ``outage_timeout_s``, print one line and end the process with
        status 75 (for ``bytewax.run``) instead of raising
        :class:`KafkaOutageError`; for a record larger than the topic takes,
        that ``shrink`` cannot cut, status 2 instead of raising
        :class:`RecordTooLargeError`.
    shrink
        ``shrink(value, room)``: the record's value in at most ``room``
        bytes, or None if it cannot be cut (as
        :func:`sinks.records.fit_dead_letter`). None: no record is cut.
    """

    def __init__(self, topic: str, config: dict[str, Any], outage_timeout_s: float = 300.0,
                 exit_process: bool = False, shrink: Optional[Callable[[bytes, int], Optional[bytes]]] = None):
        self._topic = topic
        self._config = config
        self._outage_s = outage_timeout_s
        self._exit = exit_process
        self._shrink = shrink
        self._lock = threading.Lock()  # the workers of a process share this sink
        self._ready: Optional[_Partition] = None  # the writer made when the parts were listed

    def list_parts(self) -> list[str]:
        """One partition, the topic: every worker can write it.

        Called when the dataflow starts, where Bytewax builds the partition
        only when its first record comes: the writer is made here, once per
        process (the topic created if missing, its record limit read, the
        producer connected), so that the first record does not wait for
        them (an idempotent producer's first delivery waits for its
        producer id: 0.5 to 1 s on a broker just started). In a cluster, the
        processes that do not own the partition keep an idle producer.
        """
        with self._lock:
            if self._ready is None:
                self._ready = self._writer()
        return [self._topic]

    def _client_config(self) -> dict[str, Any]:
        # Records never expire in librdkafka's queue (whatever the config says): the outage timeout is the
        # one bound, and a record is either delivered or the run stops.
        return {"reconnect.backoff.max.ms": 2000, "logger": rdkafka_logger(), **self._config, "message.timeout.ms": 0}

    def _checked(self) -> Optional[int]:
        """Create the topic if missing, once the brokers answer; its max.message.bytes (None: not known)."""
        outage = Outage(f"writing to {self._topic!r}", self._outage_s, exit_process=self._exit)
        config = self._client_config()
        while True:
            t0 = time.monotonic()
            try:
                ensure_topic(config, self._topic, timeout_s=min(10.0, self._outage_s))
                break
            except KafkaException as ex:
                if not is_transient(ex.args[0]):
                    raise
                time.sleep(outage.waiting(f"cannot create the topic: {ex.args[0].str()}", t0))
        outage.over()
        return topic_limit(config, self._topic, timeout_s=min(10.0, self._outage_s))

    def _writer(self) -> _Partition:
        """An idempotent producer for the topic, once the brokers answer and the topic is there."""
        limit = self._checked()
        outage = Outage(f"writing to {self._topic!r}", self._outage_s, exit_process=self._exit)
        return _Partition(self._client_config(), self._topic, outage, limit=limit, shrink=self._shrink,
                          exit_process=self._exit)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Partition:
        """The writer made when the parts were listed, or a new one (nothing to resume: at-least-once)."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready if ready is not None else self._writer()


def _admin(config: dict[str, Any]) -> Any:
    """An admin client with the connection settings of producer ``config``."""
    from confluent_kafka.admin import AdminClient

    admin_cfg = {k: v for k, v in config.items()
                 if k in ("bootstrap.servers", "security.protocol", "logger") or k.startswith(("sasl.", "ssl."))}
    # AdminClient takes a logger object, which its stub's value types (str, int, float, bool) leave out
    with_logger: dict[str, Any] = {"logger": rdkafka_logger(), **admin_cfg}
    return AdminClient(with_logger)


def topic_limit(config: dict[str, Any], topic: str, timeout_s: float = 10.0) -> Optional[int]:
    """The largest record batch ``topic`` takes (its ``max.message.bytes``, as the broker tells it), or None.

    None, with a warning, when the broker does not tell (DescribeConfigs not
    allowed, no answer in ``timeout_s``).
    """
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = _admin(config)  # held until the answer is in: a client that is gone cancels its requests
    try:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)], request_timeout=timeout_s)
        return int(next(iter(futures.values())).result(timeout_s)["max.message.bytes"].value)
    except (KafkaException, TimeoutError, KeyError, ValueError, TypeError) as ex:
        log.warning("cannot read max.message.bytes of Kafka topic %r (%s): a record is sized for the producer's "
                    "message.max.bytes, and what the broker refuses as too large is sent again in smaller "
                    "record batches", topic, ex)
        return None


def kafka_unreachable(brokers: list[str], client_config: dict[str, Any], timeout_s: float) -> Optional[str]:
    """Why the Kafka ``brokers`` did not answer a metadata request within ``timeout_s`` seconds, or None.

    None when they did. librdkafka's own lines about each failed attempt are
    kept off stderr.
    """
    from confluent_kafka.admin import AdminClient

    cfg = {k: v for k, v in client_config.items() if k == "security.protocol" or k.startswith(("sasl.", "ssl."))}
    admin = AdminClient({**cfg, "bootstrap.servers": ",".join(brokers), "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as ex:
        return error_text(ex)
    return None


def check_reachable(kafka: KafkaConfig) -> None:
    """Check, at the start of what connects to Kafka, that the brokers of ``kafka`` answer.

    Raises a :class:`~core.config.ConfigError` (one line naming the
    settings; exit status 2 at the entry points) when they do not answer
    within ``kafka.connect_timeout_s``.
    """
    why = kafka_unreachable(kafka.brokers, kafka.client_config(), kafka.connect_timeout_s)
    if why is not None:
        raise ConfigError(f"cannot reach Kafka at {kafka.bootstrap_servers} (TICKLET_KAFKA__BOOTSTRAP_SERVERS) "
                          f"within {kafka.connect_timeout_s:g} s (TICKLET_KAFKA__CONNECT_TIMEOUT_S): {why}")


def ensure_topic(config: dict[str, Any], topic: str, partitions: int = 4, replication: int = 1,
                 timeout_s: float = 30.0, topic_config: Optional[dict[str, str]] = None) -> None:
    """Create ``topic`` unless it exists (safe to call from many workers).

    Records keep their event time as Kafka timestamp, which for replayed
    history is old: topics are created with ``retention.ms=-1`` by default,
    or the broker would delete them at once.
    """
    from confluent_kafka.admin import NewTopic

    admin = _admin(config)
    if topic in admin.list_topics(timeout=timeout_s).topics:
        return
    cfg = {"retention.ms": "-1", **(topic_config or {})}
    fut = admin.create_topics([NewTopic(topic, partitions, replication, config=cfg)],
                              request_timeout=timeout_s)[topic]
    try:
        fut.result(timeout_s)
    except KafkaException as ex:
        if ex.args[0].code() != ex.args[0].TOPIC_ALREADY_EXISTS:
            raise
