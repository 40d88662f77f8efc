"""Readiness checks over each service's real protocol: a Kafka metadata request, a MongoDB ping, an HTTP GET."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from sensor_pipeline.local.definition import Service


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback (for a server a test or benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def kafka_ready(port: int) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=[f"127.0.0.1:{port}"], request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def mongo_ready(port: int) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=1500, connectTimeoutMS=1500
    )
    try:
        return bool(client.admin.command("ping").get("ok"))
    except PyMongoError:
        return False
    finally:
        client.close()


def http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200 <= int(response.status) < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check(service: Service, process_running: Callable[[], bool]) -> bool:
    """True when the service answers on its protocol (or, for a plain worker, its process runs)."""
    if service.health == "process":
        return process_running()
    assert service.port is not None, f"{service.name}: a network health check needs a port"
    if service.health == "kafka":
        return kafka_ready(service.port)
    if service.health == "mongo":
        return mongo_ready(service.port)
    if service.health == "http":
        return http_ready(f"http://127.0.0.1:{service.port}{service.path}")
    raise ValueError(f"{service.name}: unknown health check {service.health!r}")


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
