"""A load generator cheap enough not to be the benchmark's bottleneck: librdkafka (confluent-kafka).

Sends raw lines in the contract's format to a topic at a steady rate, each stamped with the time it
is sent (a live stream, not a backlog), keyed by beach as the pipeline's producer keys them.
MeasurementIDs are ``--first-id`` + sequence number, so the benchmark knows which ids to look for.

    python benchmarks/loadgen.py --bootstrap 127.0.0.1:9092 --topic T --rate 1000 --seconds 60

``--clean`` sends what the job publishes on CleanSensorData instead (JSON, the contract's keys), and
``--dead-topic T --dead-every N`` makes every Nth message a dead letter on T (benchmarks/dashboard.py).
``--transaction-size N`` sends in Kafka transactions of N messages, as the job publishes (the broker
ceiling of ``make bench``, at ``--rate 0``: a transaction commits after N messages, however long they
take at a low rate).

Prints one JSON line when done: ``sent``, ``started``/``ended``/``flushed`` (epoch seconds: the first send,
the last, every message acknowledged), ``errors``, ``cpu`` (s, the whole process) and ``send_cpu`` (s,
from the first send to the last acknowledgement).
Rate 0 sends ``--count`` lines as fast as librdkafka takes them (the broker ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

from confluent_kafka import Producer

from sensor_pipeline.source.simulator import Simulator

TICK = 0.005  # seconds between bursts: 5 ms keeps the send time within 5 ms of the stamp


def bodies(count: int = 4096) -> list[tuple[bytes, str]]:
    """(key, "temperature turbidity battery beach") of simulated readings, reused round-robin."""
    out = []
    for line in Simulator(seed=7, fault_rate=0.0).take(count):
        fields = line.split()
        out.append((fields[4].encode(), " ".join(fields[1:5])))
    return out


REASONS = ("bad_shape", "out_of_range", "bad_timestamp", "future_timestamp", "bad_number")


def clean_message(line: str) -> bytes:
    """The clean message the job publishes for a valid ``line`` (its JSON shape, not its code path)."""
    stamp, temperature, turbidity, battery, beach, mid = line.split()
    return json.dumps(
        {
            "Beach": beach.replace("_", " "),
            "MeasurementID": int(mid),
            "BatteryLife": float(battery),
            "RawData": line,
            "WaterTemperature": float(temperature),
            "Turbidity": float(turbidity),
            "TimeStamp": stamp,
        }
    ).encode()


def dead_letter(line: str, seq: int) -> bytes:
    """A dead letter in the contract's shape, its reason one of a few in turn."""
    reason = REASONS[seq % len(REASONS)]
    source = {"topic": "RawSensorData", "partition": 0, "offset": seq}
    return json.dumps(
        {
            "RawData": line,
            "Reason": reason,
            "Detail": "load generator",
            "Source": source,
            "RejectedAt": line.split(maxsplit=1)[0],
        }
    ).encode()


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True, help="readings per second; 0 = as fast as possible")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--count", type=int, default=0, help="with --rate 0: how many to send")
    parser.add_argument("--first-id", type=int, default=1)
    parser.add_argument("--clean", action="store_true", help="send clean readings (JSON), not raw lines")
    parser.add_argument("--dead-topic", help="with --dead-every: where the dead letters go")
    parser.add_argument("--dead-every", type=int, default=0, help="every Nth message a dead letter (0: none)")
    parser.add_argument("--transaction-size", type=int, default=0, help="messages per transaction (0: none)")
    args = parser.parse_args(argv)
    if args.rate < 0 or args.seconds <= 0 or (args.rate == 0 and args.count <= 0):
        parser.error("--rate must be >= 0, --seconds > 0, and --rate 0 needs --count > 0")
    if args.dead_every < 0 or (args.dead_every and not args.dead_topic):
        parser.error("--dead-every must be >= 0 and needs --dead-topic")
    if args.transaction_size < 0:
        parser.error("--transaction-size must be >= 0")
    return args


def main(argv: list[str]) -> int:
    args = arguments(argv)
    errors = 0

    def delivered(error: object, _message: object) -> None:
        nonlocal errors
        if error is not None:
            errors += 1

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            # Clean messages as the job sends them: Spark's Kafka writer compresses nothing by default.
            "compression.type": "none" if args.clean else "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
        | ({"transactional.id": f"loadgen-{os.getpid()}"} if args.transaction_size else {})
    )
    if args.transaction_size:
        producer.init_transactions(60)
        producer.begin_transaction()
    pool = bodies()
    total = args.count if args.rate == 0 else int(args.rate * args.seconds)
    started, cpu_at_start = time.time(), time.process_time()
    sent = 0
    while sent < total:
        due = total if args.rate == 0 else min(total, int((time.time() - started) * args.rate) + 1)
        if due > sent:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for seq in range(sent, due):
                key, body = pool[seq % len(pool)]
                line = f"{stamp} {body} {args.first_id + seq}"
                topic, value = args.topic, line.encode()
                if args.dead_every and seq % args.dead_every == 0:
                    topic, value = args.dead_topic, dead_letter(line, seq)
                elif args.clean:
                    value = clean_message(line)
                while True:
                    try:
                        producer.produce(topic, value, key, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.01)
                if args.transaction_size and (seq + 1) % args.transaction_size == 0:
                    producer.commit_transaction(60)
                    producer.begin_transaction()
            sent = due
        producer.poll(0)
        if args.rate:
            time.sleep(TICK)
    ended = time.time()
    if args.transaction_size:
        producer.commit_transaction(60)  # the last, partial transaction (flushes)
    producer.flush(60)
    # CPU of the whole process, librdkafka's threads included: the benchmark's "loadgen" row.
    cpu, flushed = time.process_time(), time.time()
    # send_cpu / (flushed - started): the cores the sending took, its start-up (imports, connection) left out.
    result = {"sent": sent, "started": started, "ended": ended, "flushed": flushed, "errors": errors, "cpu": cpu,
              "send_cpu": cpu - cpu_at_start}  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
