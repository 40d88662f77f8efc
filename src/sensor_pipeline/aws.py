"""boto3 clients for every AWS call the project makes (S3, EMR Serverless, ECS, Secrets Manager, ...).

A module of its own, importing nothing but boto3 and the settings: the Spark job imports it (through
``store``, for the DocumentDB secret) inside the EMR archive, which carries only the job's packages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sensor_pipeline.config import Settings


def aws_client(settings: Settings, service: str) -> Any:
    """A boto3 client; pointed at the local emulator when ``SP_AWS_ENDPOINT_URL`` is set.

    ``localstack-client`` builds the same endpoint (``LOCALSTACK_HOST``) with dummy credentials; it
    is used when the endpoint is the emulator so that no real AWS credentials are needed locally.
    """
    if settings.aws_endpoint_url:
        import localstack_client.session

        host = urlsplit(settings.aws_endpoint_url).netloc
        session = localstack_client.session.Session(region_name=settings.aws_region, localstack_host=host)
        return session.client(service)
    import boto3

    return boto3.client(service, region_name=settings.aws_region)  # type: ignore[call-overload]
