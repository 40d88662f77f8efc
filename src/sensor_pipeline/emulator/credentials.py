"""The container credentials endpoint: how a workload of the rehearsal gets its role's credentials.

On Fargate the ECS agent serves each task its task role's credentials at
``169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``; every AWS SDK reads them from there and
refreshes them before they expire. Here the emulator serves them on loopback and the runner gives the
workload ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (which the SDKs accept for a loopback address) and
``AWS_CONTAINER_AUTHORIZATION_TOKEN``: the same SDK code path, credentials issued by the emulator's
STS for the role, after its trust policy let the service assume it (:func:`.iam.assume_role_as_service`).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sensor_pipeline.emulator import iam

log = logging.getLogger("sensor_pipeline.emulator.credentials")


@dataclass(frozen=True)
class Grant:
    role_arn: str
    service: str  # ecs-tasks.amazonaws.com or emr-serverless.amazonaws.com
    session: str
    source_arn: str


class CredentialsServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.grants: dict[str, Grant] = {}
        self.lock = threading.Lock()
        grants, lock = self.grants, self.lock

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                with lock:
                    grant = grants.get(token)
                if grant is None or self.headers.get("Authorization") != token:
                    self._answer(403, {"message": "unknown or unauthorized credentials request"})
                    return
                try:
                    body: dict[str, Any] = iam.assume_role_as_service(
                        grant.role_arn, grant.service, grant.session, grant.source_arn
                    )
                except iam.TrustError as error:
                    self._answer(500, {"message": str(error)})
                    return
                self._answer(200, body)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="credentials", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()

    def grant(self, role_arn: str, service: str, session: str, source_arn: str = "") -> dict[str, str]:
        """Check the trust policy now (a task whose role cannot be assumed does not start, as on ECS),
        and return the environment that points the workload's SDKs at its credentials."""
        iam.assume_role_as_service(role_arn, service, session, source_arn)
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.grants[token] = Grant(role_arn, service, session, source_arn)
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        return {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://{host}:{port}/v2/credentials/{token}",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
        }

    def revoke(self, environment: dict[str, str]) -> None:
        with self.lock:
            self.grants.pop(environment.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", ""), None)
