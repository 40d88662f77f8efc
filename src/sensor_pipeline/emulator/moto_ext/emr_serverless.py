"""EMR Serverless: ``emr-spark-*`` release labels, job runs a runner moves on, tags."""

from __future__ import annotations

import re
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.emrserverless import models as emr_models
from moto.emrserverless import responses as emr_responses
from moto.emrserverless import urls as emr_urls
from moto.emrserverless.exceptions import ResourceNotFoundException, ValidationException

from sensor_pipeline.emulator.moto_ext._base import (
    _add_url_paths,
    _set,
    _wrap,
)

# --- EMR Serverless ----------------------------------------------------------------------------

_TERMINAL_RUN_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})

# Application settings moto's Application drops. Kept as snake_case attributes, which moto's
# serializer finds for the camelCase members of the API's Application shape.
_APPLICATION_EXTRAS = (
    "architecture",
    "imageConfiguration",
    "interactiveConfiguration",
    "runtimeConfiguration",
    "monitoringConfiguration",
    "schedulerConfiguration",
    "workerTypeSpecifications",
)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _emr_create_application(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
    # Gap: moto accepts only release labels emr-X.Y.0; AWS also names releases emr-spark-X.Y.Z.
    label = kwargs["release_label"]
    if not re.fullmatch(r"emr-spark-\d+\.\d+\.\d+", label):
        return original(self, *args, **kwargs)
    application = original(self, *args, **{**kwargs, "release_label": "emr-7.0.0"})  # passes moto's check
    application.release_label = label
    return application


def _emr_start_job_run(original: Any, self: Any, application_id: str, *args: Any, **kwargs: Any) -> Any:
    # Gap: moto runs jobs on an application in any state; AWS starts a CREATED or STOPPED
    # application on StartJobRun when auto-start is on, and refuses the run when it is off.
    application = self.get_application(application_id)
    idle = application.state in ("CREATED", "STOPPED")
    if idle and not (application.auto_start_configuration or {}).get("enabled", True):
        raise ValidationException(f"Application {application_id} is not started and auto-start is disabled")
    run = original(self, application_id, *args, **kwargs)
    if idle:
        application.state = "STARTED"
    return run


def _emr_cancel_job_run(self: Any, application_id: str, job_run_id: str) -> tuple[str, str]:
    # Gap: moto cancels at once (CANCELLED); AWS cancels asynchronously through CANCELLING, and
    # the local job runner ends the run. A finished run cannot be cancelled.
    run = self.get_job_run(application_id, job_run_id)
    if run.state in _TERMINAL_RUN_STATES:
        raise ValidationException(f"Job run {job_run_id} is already in a terminal state: {run.state}")
    run.state = "CANCELLING"
    return application_id, job_run_id


def _emr_handle_start_job_run(original: Any, self: Any) -> Any:
    # Gap: StartJobRun's mode (BATCH/STREAMING) and retryPolicy are dropped by moto; they are kept
    # on the JobRun (attributes mode, retry_policy), returned by GetJobRun, read by the runner.
    result = original(self)
    run = self.emrserverless_backend.get_job_run(result.result["applicationId"], result.result["jobRunId"])
    run.mode = self._get_param("mode") or "BATCH"
    run.retry_policy = self._get_param("retryPolicy")
    return result


def _emr_keep_extras(response: Any, application: Any, update: bool) -> None:
    # Gap: architecture and the other settings above are dropped by moto, so the plan after an
    # apply wants to set them again; UpdateApplication's releaseLabel is ignored as well.
    for key in _APPLICATION_EXTRAS:
        value = response._get_param(key)
        if value is not None:
            setattr(application, _snake(key), value)
        elif key == "architecture" and not update:
            application.architecture = "X86_64"  # AWS's default
    if update and response._get_param("releaseLabel"):
        application.release_label = response._get_param("releaseLabel")


def _emr_handle_create_application(original: Any, self: Any) -> Any:
    result = original(self)
    application = self.emrserverless_backend.get_application(result.result["applicationId"])
    _emr_keep_extras(self, application, update=False)
    return result


def _emr_handle_update_application(original: Any, self: Any) -> Any:
    result = original(self)
    _emr_keep_extras(self, result.result["application"], update=True)
    return result


def _emr_tagged(backend: Any, arn: str) -> Any:
    for application in backend.applications.values():
        if application.arn == arn:
            return application
    for runs in backend.job_runs.values():
        for run in runs:
            if run.arn == arn:
                return run
    raise ResourceNotFoundException(arn, "Resource")


# Gap: TagResource / UntagResource / ListTagsForResource are missing (404); Terraform lists the
# tags of every tagged resource it reads.


def _emr_handle_list_tags(self: Any) -> ActionResult:
    resource = _emr_tagged(self.emrserverless_backend, self._get_param("resourceArn"))
    return ActionResult({"tags": resource.tags or {}})


def _emr_handle_tag(self: Any) -> EmptyResult:
    resource = _emr_tagged(self.emrserverless_backend, self._get_param("resourceArn"))
    resource.tags = {**(resource.tags or {}), **(self._get_param("tags") or {})}
    return EmptyResult()


def _emr_handle_untag(self: Any) -> EmptyResult:
    resource = _emr_tagged(self.emrserverless_backend, self._get_param("resourceArn"))
    keys = set(self._get_param("tagKeys") or [])
    resource.tags = {k: v for k, v in (resource.tags or {}).items() if k not in keys}
    return EmptyResult()


def _patch_emr_serverless() -> None:
    # Gap: moto makes a new application STARTED at once; AWS creates it CREATED (it starts on its
    # first job run, or on StartApplication). moto makes a new job run SUCCESS at once; on AWS it
    # is SUBMITTED, and here the local job runner moves it through PENDING/RUNNING to its end.
    _set(emr_models, "APPLICATION_STATUS", "CREATED")
    _set(emr_models, "JOB_STATUS", "SUBMITTED")
    backend = emr_models.EMRServerlessBackend
    _wrap(backend, "create_application", _emr_create_application)
    _wrap(backend, "start_job_run", _emr_start_job_run)
    _set(backend, "cancel_job_run", _emr_cancel_job_run)
    response = emr_responses.EMRServerlessResponse
    _wrap(response, "start_job_run", _emr_handle_start_job_run)
    _wrap(response, "create_application", _emr_handle_create_application)
    _wrap(response, "update_application", _emr_handle_update_application)
    _set(response, "list_tags_for_resource", _emr_handle_list_tags)
    _set(response, "tag_resource", _emr_handle_tag)
    _set(response, "untag_resource", _emr_handle_untag)
    _add_url_paths(emr_urls, {"{0}/tags/(?P<resourceArn>.+)$": response.dispatch})
