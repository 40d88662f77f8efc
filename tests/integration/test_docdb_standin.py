"""A DocumentDB cluster of the emulator is a real server (sensor_pipeline.emulator.docdb): FerretDB v1.24 with
TLS only and the master user's password, on a loopback address of its own and the cluster's port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from sensor_pipeline.emulator.docdb import DocdbServers
from sensor_pipeline.local import artifacts, tls
from sensor_pipeline.local.definition import StackDefinition, find_root

pytestmark = [pytest.mark.integration, pytest.mark.aws_emulator]
ROOT = find_root(Path(__file__))


@pytest.fixture
def servers(stack: StackDefinition, tmp_path: Path) -> Iterator[DocdbServers]:
    (tmp_path / "logs").mkdir()
    certificates = tls.ensure(tmp_path)
    binary = artifacts.ferretdb(ROOT, stack.versions["ferretdb"])
    servers = DocdbServers(binary, tmp_path, certificates.server_cert, certificates.server_key)
    yield servers
    servers.stop_all()


def client(address: str, ca: Path, **options: Any) -> MongoClient[dict[str, Any]]:
    return MongoClient(address, tls=True, tlsCAFile=str(ca), serverSelectionTimeoutMS=5000, **options)


def test_a_cluster_serves_tls_with_its_master_password_only_and_outlives_the_request(
    servers: DocdbServers, tmp_path: Path
) -> None:
    # The emulator starts it while answering CreateDBCluster, in a request thread that ends at once.
    request = threading.Thread(target=servers.start, args=("pipeline", 27017, "pipeline", "the-secret"))
    request.start()
    request.join()
    host = servers.host("pipeline")
    assert host == "127.0.0.2" and servers.port("pipeline") == 27017
    ca = tmp_path / "tls" / "ca.pem"
    good = client(f"mongodb://{host}:27017/", ca, username="pipeline", password="the-secret")
    good.water_quality.sensor_readings.insert_one({"_id": 1})
    assert good.water_quality.sensor_readings.count_documents({}) == 1
    with pytest.raises(OperationFailure, match="Authentication failed"):
        client(f"mongodb://{host}:27017/", ca, username="pipeline", password="wrong").admin.command("listDatabases")
    with pytest.raises(ServerSelectionTimeoutError):
        MongoClient(f"mongodb://{host}:27017/", serverSelectionTimeoutMS=1500).admin.command("ping")  # no TLS
    good.close()
    servers.stop("pipeline")
    assert not (tmp_path / "docdb" / "pipeline").exists(), "a deleted cluster's data goes with it"
