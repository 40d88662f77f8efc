"""boto3 clients for every AWS call the project makes (S3, EMR Serverless, ECS, Secrets Manager, ...).

A module of its own, importing nothing but boto3 and the settings: the Spark job imports it (through
``store``, for the DocumentDB secret) inside the EMR archive, which carries only the job's packages.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from sensor_pipeline.config import Settings

#: Where an AWS SDK finds a workload's own credentials: the container credentials endpoint (ECS, and the
#: rehearsal's runners) or explicit keys. With them, calls to the emulator are signed as that role.
#: A process ECS or EMR runs (``AWS_EXECUTION_ENV``) always uses the standard chain, so a task without a
#: role has no credentials at all, as on Fargate, and is never the root.
WORKLOAD_CREDENTIALS = (
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_EXECUTION_ENV",
)


def aws_client(settings: Settings, service: str) -> Any:
    """A boto3 client; pointed at the local emulator when ``SP_AWS_ENDPOINT_URL`` is set.

    Against the emulator, a process that was given credentials (a rehearsal workload: its role's, from
    the container credentials endpoint) signs with them, and the emulator authorizes the call against
    that role's policies. Otherwise ``localstack-client`` supplies its dummy credentials, which the
    emulator takes as the account root (the local stack's own set-up, the deploying user).
    """
    if settings.aws_endpoint_url:
        if any(os.environ.get(name) for name in WORKLOAD_CREDENTIALS):
            import boto3

            return boto3.session.Session().client(  # type: ignore[call-overload]
                service, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
            )
        import localstack_client.session

        host = urlsplit(settings.aws_endpoint_url).netloc
        session = localstack_client.session.Session(region_name=settings.aws_region, localstack_host=host)
        return session.client(service)
    import boto3

    return boto3.client(service, region_name=settings.aws_region)  # type: ignore[call-overload]
