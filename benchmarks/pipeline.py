"""Pipeline benchmarks on the local stack, with a baseline in the original design's style, same run.

    make local-infra-up && make bench          (options: python benchmarks/pipeline.py --help)

Measures, on this machine:
1. baseline: the original design's path for each reading: one HTTP request to the API for one reading,
   one unbatched synchronous Kafka send, one consume, Python validation, one insert_one, one clean send.
2. throughput: N raw lines already in RawSensorData, processed by the real Spark job (spark-submit,
   local[2], --available-now); readings/s over the job's processing time (from its batch log lines).
3. latency: the producer streams from the real API at a steady rate while the job runs with a 1 s
   trigger; for every reading, the delay from its timestamp to its arrival on CleanSensorData.
Prints figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from sensor_pipeline import provision, store
from sensor_pipeline.config import Settings, settings_from_env_map
from sensor_pipeline.rules import validate_line
from sensor_pipeline.schema import clean_message
from sensor_pipeline.simulator import Simulator
from sensor_pipeline.stack import artifacts
from sensor_pipeline.stack.definition import find_root, load
from sensor_pipeline.stack.runner import spark_submit_command

ROOT = find_root(Path(__file__))
BIN = Path(sys.executable).parent


def isolated(base: Settings, tag: str, tmp: Path) -> Settings:
    # No injected faults: both sides process the same clean stream.
    settings = base.sandboxed(f"bench-{tag}", str(tmp)).model_copy(update={"sim_fault_rate": 0.0})
    provision.ensure_topics(settings)
    provision.ensure_store(settings)
    return settings


def env_of(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


def spark_job(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    jars = artifacts.spark_jars(ROOT, load(ROOT).versions["spark"])
    command = spark_submit_command(ROOT, jars, args, driver_memory="2g")
    env = {**env_of(settings), "PYSPARK_PYTHON": sys.executable}
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def baseline(base: Settings, tmp: Path, count: int) -> float:
    """The original style, end to end, per reading; returns readings/s."""
    from flask import Flask

    from sensor_pipeline.api import create_app

    settings = isolated(base, "base" + uuid.uuid4().hex[:6], tmp)
    app: Flask = create_app(settings)
    client_http = app.test_client()  # in-process HTTP: flatters the baseline (no network, no server)
    producer = KafkaProducer(**settings.kafka_client_options())
    consumer = KafkaConsumer(settings.raw_topic, **settings.kafka_client_options(), auto_offset_reset="earliest",
                             group_id="bench-baseline")  # fmt: skip
    mongo = store.connect(settings)
    collection = store.readings(mongo, settings)
    started = time.perf_counter()
    done = 0
    for _ in range(count):
        line = client_http.get("/sensordata").get_data(as_text=True).strip()
        producer.send(settings.raw_topic, value=line.encode()).get(timeout=10)
    while done < count:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                verdict = validate_line(record.value.decode())
                if verdict.record is not None:
                    collection.insert_one({"_id": verdict.record["MeasurementID"], **verdict.record})
                    message = json.dumps(clean_message(verdict.record)).encode()
                    producer.send(settings.clean_topic, value=message).get(timeout=10)
                done += 1
    elapsed = time.perf_counter() - started
    producer.close()
    consumer.close()
    mongo.drop_database(settings.mongo_database)
    mongo.close()
    return count / elapsed


def throughput(base: Settings, tmp: Path, count: int) -> dict[str, float]:
    settings = isolated(base, "tput" + uuid.uuid4().hex[:6], tmp)
    lines = Simulator(seed=1).take(count)
    producer = KafkaProducer(**settings.kafka_client_options(), linger_ms=20, batch_size=256 * 1024, acks="all")
    for line in lines:
        producer.send(settings.raw_topic, key=line.split()[4].encode(), value=line.encode())
    producer.flush()
    producer.close()
    log = tmp / "throughput-job.log"
    started = time.perf_counter()
    job = spark_job(settings, log, "--available-now", "--max-offsets-per-trigger", str(count))
    if job.wait(900) != 0:
        raise SystemExit(f"the job failed; see {log}")
    wall = time.perf_counter() - started
    batch_seconds = sum(float(s) for s in re.findall(r"written in ([0-9.]+) s", log.read_text()))
    mongo = store.connect(settings)
    stored = store.readings(mongo, settings).count_documents({})
    mongo.drop_database(settings.mongo_database)
    mongo.close()
    return {"readings": count, "stored": stored, "job_wall_s": wall, "batch_s": batch_seconds,
            "readings_per_s": count / batch_seconds if batch_seconds else 0.0}  # fmt: skip


def latency(base: Settings, tmp: Path, rate: float, seconds: float) -> dict[str, float]:
    settings = isolated(base, "lat" + uuid.uuid4().hex[:6], tmp)
    job = spark_job(settings, tmp / "latency-job.log", "--trigger-seconds", "1", "--starting-offsets", "latest")
    delays: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        consumer = KafkaConsumer(**settings.kafka_client_options())
        partitions = [
            TopicPartition(settings.clean_topic, p) for p in consumer.partitions_for_topic(settings.clean_topic)
        ]
        consumer.assign(partitions)
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                arrived = datetime.now(UTC)
                for record in records:
                    stamp = datetime.fromisoformat(json.loads(record.value)["TimeStamp"].replace("Z", "+00:00"))
                    delays.append((arrived - stamp).total_seconds())
        consumer.close()

    api_port = 3999
    api = subprocess.Popen([str(BIN / "sensor-pipeline"), "api", "--port", str(api_port), "--speed", str(rate * 600)],
                           env=env_of(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    reader = threading.Thread(target=consume)
    try:
        time.sleep(25)  # the job's session start and first (empty) batches
        reader.start()
        producer = subprocess.Popen(
            [str(BIN / "sensor-pipeline"), "produce", "--rate", str(rate), "--api-url", f"http://127.0.0.1:{api_port}"],
            env=env_of(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(seconds)
        producer.send_signal(signal.SIGTERM)
        producer.wait(60)
        time.sleep(10)
    finally:
        stop.set()
        api.terminate()
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(60)
    if reader.is_alive():
        reader.join(10)
    delays.sort()
    if not delays:
        return {"messages": 0}
    return {"messages": len(delays), "rate_per_s": len(delays) / seconds, "p50_s": statistics.median(delays),
            "p95_s": delays[int(len(delays) * 0.95) - 1], "max_s": delays[-1]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-count", type=int, default=500)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=200.0, help="producer rate for the latency run")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the latency run")
    args = parser.parse_args()
    base = settings_from_env_map(load(ROOT).settings)
    tmp = ROOT / ".local-stack" / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; stack: {base.kafka_bootstrap}, {base.mongo_uri}", flush=True)
    rate = baseline(base, tmp, args.baseline_count)
    print(f"baseline (original style, per reading)   : {rate:8.1f} readings/s over {args.baseline_count}", flush=True)
    result = throughput(base, tmp, args.count)
    speedup = result["readings_per_s"] / rate
    print(
        f"pipeline throughput (Spark, batched)      : {result['readings_per_s']:8.1f} readings/s "
        f"({result['stored']} stored of {result['readings']}; {result['batch_s']:.1f} s in batches, "
        f"{result['job_wall_s']:.1f} s with JVM start) = {speedup:.0f}x baseline",
        flush=True,
    )
    lat = latency(base, tmp, args.rate, args.seconds)
    figures = json.dumps({k: round(v, 3) for k, v in lat.items()})
    print(f"latency at {args.rate:.0f} readings/s for {args.seconds:.0f} s: {figures}")


if __name__ == "__main__":
    main()
