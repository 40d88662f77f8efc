"""What the project's moto extensions answer (sensor_pipeline.emulator.moto_ext), through a moto server in-process.

Each test states one behaviour of AWS that plain moto 5.2 lacks and the extension provides, called the
way the aws Terraform provider and the pipeline call it: boto3 against ``ThreadedMotoServer`` on a free port.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from sensor_pipeline.emulator import moto_ext
from sensor_pipeline.emulator.moto_ext import EmulatorConfig

CONFIG = EmulatorConfig(kafka_bootstrap="broker.local:19092", mongo_host="mongo.local", mongo_port=27018)
ROLE = "arn:aws:iam::123456789012:role/job"

Client = Callable[[str], Any]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    moto_ext.install(EmulatorConfig())
    moto_ext.install(CONFIG)  # idempotent: the second call only replaces the configuration
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        moto_ext.uninstall()


@pytest.fixture
def client(endpoint: str) -> Iterator[Client]:
    def make(service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    yield make
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()


def error_of(call: Callable[[], Any]) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def private_subnets(client: Client) -> list[str]:
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")["Subnet"]
        for i, zone in enumerate("ab")
    ]
    return [subnet["SubnetId"] for subnet in subnets]


# --- MSK -----------------------------------------------------------------------------------------


def create_msk_cluster(kafka: Any, configuration: dict[str, Any] | None = None) -> str:
    arn: str = kafka.create_cluster(
        ClusterName="pipeline",
        KafkaVersion="4.1.x",
        NumberOfBrokerNodes=2,
        BrokerNodeGroupInfo={"InstanceType": "kafka.t3.small", "ClientSubnets": ["subnet-a", "subnet-b"]},
        ClientAuthentication={"Sasl": {"Iam": {"Enabled": True}}},
        **({"ConfigurationInfo": configuration} if configuration else {}),
    )["ClusterArn"]
    return arn


def test_an_msk_cluster_is_active_at_once_with_an_aws_shaped_arn(client: Client) -> None:
    kafka = client("kafka")
    arn = create_msk_cluster(kafka)
    assert kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]["State"] == "ACTIVE"
    assert kafka.describe_cluster(ClusterArn=arn)["ClusterInfo"]["State"] == "ACTIVE"
    # arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>-<n>, as infra/ splits it
    assert arn.split(":")[5].split("/")[:2] == ["cluster", "pipeline"]
    assert len(arn.split("/")) == 3


def test_a_serverless_msk_cluster_is_active_at_once(client: Client) -> None:
    kafka = client("kafka")
    arn = kafka.create_cluster_v2(
        ClusterName="pipeline",
        Serverless={
            "VpcConfigs": [{"SubnetIds": ["subnet-a", "subnet-b"]}],
            "ClientAuthentication": {"Sasl": {"Iam": {"Enabled": True}}},
        },
    )["ClusterArn"]
    info = kafka.describe_cluster_v2(ClusterArn=arn)["ClusterInfo"]
    assert (info["State"], info["ClusterType"]) == ("ACTIVE", "SERVERLESS")
    assert kafka.get_bootstrap_brokers(ClusterArn=arn)["BootstrapBrokerStringSaslIam"] == CONFIG.kafka_bootstrap


def test_bootstrap_brokers_are_the_configured_broker_for_the_listeners_the_cluster_has(client: Client) -> None:
    """An IAM-only TLS cluster (infra/msk.tf's) has no plaintext listener, so MSK names none."""
    kafka = client("kafka")
    iam_only = kafka.get_bootstrap_brokers(ClusterArn=create_msk_cluster(kafka))
    assert {k: v for k, v in iam_only.items() if k.startswith("Bootstrap")} == {
        "BootstrapBrokerStringSaslIam": "broker.local:19092"
    }
    open_cluster = kafka.create_cluster(
        ClusterName="open",
        KafkaVersion="4.1.x",
        NumberOfBrokerNodes=2,
        BrokerNodeGroupInfo={"InstanceType": "kafka.m7g.large", "ClientSubnets": ["subnet-a", "subnet-b"]},
        ClientAuthentication={"Unauthenticated": {"Enabled": True}},
        EncryptionInfo={"EncryptionInTransit": {"ClientBroker": "TLS_PLAINTEXT"}},
    )["ClusterArn"]
    brokers = kafka.get_bootstrap_brokers(ClusterArn=open_cluster)
    assert {k for k in brokers if k.startswith("Bootstrap")} == {"BootstrapBrokerString", "BootstrapBrokerStringTls"}


def test_an_unknown_msk_cluster_is_not_found_with_status_404(client: Client) -> None:
    kafka = client("kafka")
    unknown = create_msk_cluster(kafka) + "0"
    for call in (
        lambda: kafka.describe_cluster(ClusterArn=unknown),
        lambda: kafka.describe_cluster_v2(ClusterArn=unknown),
        lambda: kafka.delete_cluster(ClusterArn=unknown),
        lambda: kafka.get_bootstrap_brokers(ClusterArn=unknown),
    ):
        assert error_of(call) == ("NotFoundException", 404)


def test_a_deleted_msk_cluster_is_not_found(client: Client) -> None:
    kafka = client("kafka")
    arn = create_msk_cluster(kafka)
    kafka.delete_cluster(ClusterArn=arn)
    assert error_of(lambda: kafka.describe_cluster_v2(ClusterArn=arn)) == ("NotFoundException", 404)


def test_an_msk_configuration_keeps_its_name_versions_and_revisions(client: Client) -> None:
    kafka = client("kafka")
    created = kafka.create_configuration(
        Name="pipeline", KafkaVersions=["4.1.x"], ServerProperties=b"auto.create.topics.enable=false\n"
    )
    arn = created["Arn"]
    assert (created["Name"], created["State"], created["LatestRevision"]["Revision"]) == ("pipeline", "ACTIVE", 1)

    described = kafka.describe_configuration(Arn=arn)
    assert (described["Name"], described["KafkaVersions"]) == ("pipeline", ["4.1.x"])
    revision = kafka.describe_configuration_revision(Arn=arn, Revision=1)
    assert revision["ServerProperties"] == b"auto.create.topics.enable=false\n"

    updated = kafka.update_configuration(Arn=arn, ServerProperties=b"num.partitions=3\n", Description="more")
    assert updated["LatestRevision"]["Revision"] == 2
    assert kafka.describe_configuration(Arn=arn)["LatestRevision"]["Revision"] == 2
    assert kafka.describe_configuration_revision(Arn=arn, Revision=2)["ServerProperties"] == b"num.partitions=3\n"
    assert kafka.describe_configuration_revision(Arn=arn, Revision=1)["ServerProperties"].startswith(b"auto.")
    assert [r["Revision"] for r in kafka.list_configuration_revisions(Arn=arn)["Revisions"]] == [1, 2]
    assert [c["Arn"] for c in kafka.list_configurations()["Configurations"]] == [arn]

    assert kafka.delete_configuration(Arn=arn)["State"] == "DELETING"
    assert kafka.list_configurations()["Configurations"] == []


def test_an_unknown_msk_configuration_is_the_bad_request_the_aws_provider_expects(client: Client) -> None:
    kafka = client("kafka")
    arn = kafka.create_configuration(Name="pipeline", ServerProperties=b"a=b\n")["Arn"]
    kafka.delete_configuration(Arn=arn)
    with pytest.raises(ClientError, match="Configuration ARN does not exist"):
        kafka.describe_configuration(Arn=arn)
    assert error_of(lambda: kafka.delete_configuration(Arn=arn)) == ("BadRequestException", 400)


def test_a_cluster_uses_a_configuration_revision_which_cannot_be_deleted_meanwhile(client: Client) -> None:
    kafka = client("kafka")
    configuration = kafka.create_configuration(Name="pipeline", ServerProperties=b"a=b\n")["Arn"]
    arn = create_msk_cluster(kafka, {"Arn": configuration, "Revision": 1})
    assert error_of(lambda: kafka.delete_configuration(Arn=configuration)) == ("BadRequestException", 400)

    kafka.update_configuration(Arn=configuration, ServerProperties=b"a=c\n")
    version = kafka.describe_cluster(ClusterArn=arn)["ClusterInfo"]["CurrentVersion"]
    operation = kafka.update_cluster_configuration(
        ClusterArn=arn, ConfigurationInfo={"Arn": configuration, "Revision": 2}, CurrentVersion=version
    )["ClusterOperationArn"]
    progress = kafka.describe_cluster_operation(ClusterOperationArn=operation)["ClusterOperationInfo"]
    assert progress["OperationState"] == "UPDATE_COMPLETE"
    info = kafka.describe_cluster(ClusterArn=arn)["ClusterInfo"]
    assert info["CurrentBrokerSoftwareInfo"]["ConfigurationRevision"] == 2
    assert info["CurrentVersion"] != version

    kafka.delete_cluster(ClusterArn=arn)
    kafka.delete_configuration(Arn=configuration)


# --- DocumentDB ----------------------------------------------------------------------------------


def create_docdb_cluster(client: Client) -> dict[str, Any]:
    docdb = client("docdb")
    docdb.create_db_subnet_group(
        DBSubnetGroupName="pipeline", DBSubnetGroupDescription="pipeline", SubnetIds=private_subnets(client)
    )
    docdb.create_db_cluster_parameter_group(
        DBClusterParameterGroupName="pipeline", DBParameterGroupFamily="docdb5.0", Description="TLS required"
    )
    cluster: dict[str, Any] = docdb.create_db_cluster(
        DBClusterIdentifier="pipeline",
        Engine="docdb",
        MasterUsername="pipeline",
        ManageMasterUserPassword=True,
        DBSubnetGroupName="pipeline",
        DBClusterParameterGroupName="pipeline",
        StorageEncrypted=True,
    )["DBCluster"]
    return cluster


def test_a_docdb_cluster_is_accepted_with_docdb_defaults_and_the_configured_endpoint(client: Client) -> None:
    docdb = client("docdb")
    create_docdb_cluster(client)
    docdb.create_db_instance(
        DBInstanceIdentifier="pipeline-0",
        DBClusterIdentifier="pipeline",
        DBInstanceClass="db.t3.medium",
        Engine="docdb",
    )
    cluster = docdb.describe_db_clusters(DBClusterIdentifier="pipeline")["DBClusters"][0]
    assert (cluster["Engine"], cluster["EngineVersion"]) == ("docdb", "5.0.0")
    assert (cluster["Endpoint"], cluster["ReaderEndpoint"], cluster["Port"]) == ("mongo.local", "mongo.local", 27018)
    assert "StorageType" not in cluster  # AWS reports it for iopt1 storage only
    assert cluster["DBClusterParameterGroup"] == "pipeline"
    instance = docdb.describe_db_instances(DBInstanceIdentifier="pipeline-0")["DBInstances"][0]
    assert instance["Endpoint"] == {"Address": "mongo.local", "Port": 27018}


def test_the_managed_master_password_is_a_readable_secret_deleted_with_the_cluster(client: Client) -> None:
    secret = create_docdb_cluster(client)["MasterUserSecret"]
    assert secret["SecretStatus"] == "active"
    assert secret["KmsKeyId"].startswith("arn:aws:kms:us-east-1:123456789012:key/")
    secrets = client("secretsmanager")
    value = secrets.get_secret_value(SecretId=secret["SecretArn"])
    assert value["Name"].startswith("rds!cluster-")
    credentials = json.loads(value["SecretString"])
    assert credentials["username"] == "pipeline"
    assert len(credentials["password"]) >= 16

    client("docdb").delete_db_cluster(DBClusterIdentifier="pipeline", SkipFinalSnapshot=True)
    assert secrets.list_secrets()["SecretList"] == []


def test_a_modified_cluster_keeps_its_managed_secret(client: Client) -> None:
    """The aws provider sends ManageMasterUserPassword=true with any change; AWS keeps its secret (moto made a
    new one, leaving IAM grants on the old ARN)."""
    before = create_docdb_cluster(client)["MasterUserSecret"]["SecretArn"]
    docdb = client("docdb")
    docdb.modify_db_cluster(DBClusterIdentifier="pipeline", ManageMasterUserPassword=True, BackupRetentionPeriod=7)
    after = docdb.describe_db_clusters(DBClusterIdentifier="pipeline")["DBClusters"][0]
    assert after["MasterUserSecret"]["SecretArn"] == before and after["BackupRetentionPeriod"] == 7


# --- EMR Serverless ------------------------------------------------------------------------------


def create_application(emr: Any, **settings: Any) -> str:
    request = {"name": "pipeline", "releaseLabel": "emr-spark-8.0.0", "type": "SPARK", **settings}
    application_id: str = emr.create_application(**request)["applicationId"]
    return application_id


def start_run(emr: Any, application_id: str, **settings: Any) -> str:
    run_id: str = emr.start_job_run(
        applicationId=application_id,
        executionRoleArn=ROLE,
        jobDriver={"sparkSubmit": {"entryPoint": "s3://bucket/jobs/job.py"}},
        **settings,
    )["jobRunId"]
    return run_id


def state_of(emr: Any, application_id: str) -> str:
    state: str = emr.get_application(applicationId=application_id)["application"]["state"]
    return state


def test_a_new_application_is_created_with_an_emr_spark_release_label(client: Client) -> None:
    emr = client("emr-serverless")
    application = emr.get_application(applicationId=create_application(emr))["application"]
    assert (application["state"], application["releaseLabel"]) == ("CREATED", "emr-spark-8.0.0")
    assert application["architecture"] == "X86_64"
    assert state_of(emr, create_application(emr, releaseLabel="emr-7.12.0")) == "CREATED"
    assert error_of(lambda: create_application(emr, releaseLabel="spark-8")) == ("ValidationException", 400)


def test_an_application_starts_stops_and_is_deleted_only_when_not_started(client: Client) -> None:
    emr = client("emr-serverless")
    application_id = create_application(emr)
    emr.start_application(applicationId=application_id)
    assert state_of(emr, application_id) == "STARTED"
    assert error_of(lambda: emr.delete_application(applicationId=application_id))[0] == "ValidationException"
    emr.stop_application(applicationId=application_id)
    assert state_of(emr, application_id) == "STOPPED"
    emr.delete_application(applicationId=application_id)
    assert state_of(emr, application_id) == "TERMINATED"


def test_an_application_keeps_its_settings_across_create_and_update(client: Client) -> None:
    emr = client("emr-serverless")
    network = {"subnetIds": ["subnet-a", "subnet-b"], "securityGroupIds": ["sg-1"]}
    application_id = create_application(
        emr,
        architecture="ARM64",
        maximumCapacity={"cpu": "8 vCPU", "memory": "32 GB", "disk": "200 GB"},
        autoStartConfiguration={"enabled": True},
        autoStopConfiguration={"enabled": True, "idleTimeoutMinutes": 15},
        networkConfiguration=network,
        tags={"Project": "sensor-pipeline"},
    )
    application = emr.get_application(applicationId=application_id)["application"]
    assert application["architecture"] == "ARM64"
    assert application["maximumCapacity"] == {"cpu": "8 vCPU", "memory": "32 GB", "disk": "200 GB"}
    assert application["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 15}
    assert application["networkConfiguration"] == network

    emr.update_application(
        applicationId=application_id,
        architecture="X86_64",
        releaseLabel="emr-spark-8.1.0",
        maximumCapacity={"cpu": "4 vCPU", "memory": "16 GB"},
        autoStopConfiguration={"enabled": True, "idleTimeoutMinutes": 30},
    )
    application = emr.get_application(applicationId=application_id)["application"]
    assert (application["architecture"], application["releaseLabel"]) == ("X86_64", "emr-spark-8.1.0")
    assert application["maximumCapacity"] == {"cpu": "4 vCPU", "memory": "16 GB"}
    assert application["autoStopConfiguration"]["idleTimeoutMinutes"] == 30

    arn = application["arn"]
    assert emr.list_tags_for_resource(resourceArn=arn)["tags"] == {"Project": "sensor-pipeline"}
    emr.tag_resource(resourceArn=arn, tags={"Environment": "local"})
    emr.untag_resource(resourceArn=arn, tagKeys=["Project"])
    assert emr.list_tags_for_resource(resourceArn=arn)["tags"] == {"Environment": "local"}


def test_a_job_run_is_submitted_and_auto_starts_its_application(client: Client) -> None:
    emr = client("emr-serverless")
    application_id = create_application(emr)
    run_id = start_run(
        emr, application_id, mode="STREAMING", retryPolicy={"maxFailedAttemptsPerHour": 3}, name="validate"
    )
    run = emr.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"]
    assert run["state"] == "SUBMITTED"  # not SUCCESS: a runner outside moto moves it on
    assert (run["mode"], run["retryPolicy"]) == ("STREAMING", {"maxFailedAttemptsPerHour": 3})
    assert state_of(emr, application_id) == "STARTED"
    batch = emr.get_job_run(applicationId=application_id, jobRunId=start_run(emr, application_id))["jobRun"]
    assert batch["mode"] == "BATCH"


def test_a_job_run_is_refused_by_a_stopped_application_without_auto_start(client: Client) -> None:
    emr = client("emr-serverless")
    application_id = create_application(emr, autoStartConfiguration={"enabled": False})
    assert error_of(lambda: start_run(emr, application_id))[0] == "ValidationException"
    emr.start_application(applicationId=application_id)
    assert emr.get_job_run(applicationId=application_id, jobRunId=start_run(emr, application_id))["jobRun"]


def test_cancelling_a_run_leaves_it_cancelling_for_the_runner_to_end(client: Client) -> None:
    emr = client("emr-serverless")
    application_id = create_application(emr)
    run_id = start_run(emr, application_id)
    emr.cancel_job_run(applicationId=application_id, jobRunId=run_id)
    assert emr.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"]["state"] == "CANCELLING"

    # The runner's side: it finds the run through emr_job_runs and sets moto's JobRun directly.
    [(found_application, job_run)] = [(a, r) for a, r in moto_ext.emr_job_runs() if r.id == run_id]
    assert found_application == application_id
    job_run.state, job_run.state_details = "CANCELLED", "cancelled by request"
    run = emr.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"]
    assert (run["state"], run["stateDetails"]) == ("CANCELLED", "cancelled by request")
    cancel_again = error_of(lambda: emr.cancel_job_run(applicationId=application_id, jobRunId=run_id))
    assert cancel_again[0] == "ValidationException"  # a finished run cannot be cancelled


def test_emr_job_runs_covers_every_region(client: Client, endpoint: str) -> None:
    east = client("emr-serverless")
    west = boto3.client(
        "emr-serverless",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    runs = {start_run(east, create_application(east)), start_run(west, create_application(west))}
    assert {run.id for _, run in moto_ext.emr_job_runs()} >= runs


# --- ECS, EC2, Cloud Map -------------------------------------------------------------------------


def test_an_ecs_service_keeps_its_availability_zone_rebalancing(client: Client) -> None:
    ecs = client("ecs")
    ecs.create_cluster(clusterName="pipeline")
    ecs.register_task_definition(
        family="api", containerDefinitions=[{"name": "api", "image": "app:latest", "memory": 512}]
    )
    created = ecs.create_service(
        cluster="pipeline",
        serviceName="api",
        taskDefinition="api",
        desiredCount=1,
        availabilityZoneRebalancing="ENABLED",
    )["service"]
    assert created["availabilityZoneRebalancing"] == "ENABLED"
    ecs.update_service(cluster="pipeline", service="api", availabilityZoneRebalancing="DISABLED")
    described = ecs.describe_services(cluster="pipeline", services=["api"])["services"][0]
    assert described["availabilityZoneRebalancing"] == "DISABLED"
    assert any("pipeline" in backend.clusters for backend in moto_ext.ecs_backends())


def test_a_rule_referencing_a_group_reads_back_as_written(client: Client) -> None:
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    kafka, producer = (ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"] for n in "kp")
    ec2.authorize_security_group_ingress(
        GroupId=kafka,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 9098,
                "ToPort": 9098,
                "UserIdGroupPairs": [{"GroupId": producer, "Description": "Kafka from the producer"}],
            }
        ],
    )
    filters = [{"Name": "group-id", "Values": [kafka]}]
    [rule] = [r for r in ec2.describe_security_group_rules(Filters=filters)["SecurityGroupRules"] if not r["IsEgress"]]
    assert rule["ReferencedGroupInfo"] == {"GroupId": producer}  # no UserId of the own account
    assert rule["Description"] == "Kafka from the producer"


def test_deleting_a_private_dns_namespace_deletes_its_hosted_zone(client: Client) -> None:
    discovery, route53 = client("servicediscovery"), client("route53")
    discovery.create_private_dns_namespace(Name="local.sensor-pipeline.internal", Vpc="vpc-1")
    [namespace] = discovery.list_namespaces()["Namespaces"]
    assert len(route53.list_hosted_zones()["HostedZones"]) == 1
    discovery.delete_namespace(Id=namespace["Id"])
    assert route53.list_hosted_zones()["HostedZones"] == []


# --- install / uninstall -------------------------------------------------------------------------


def test_uninstall_restores_plain_moto_and_install_patches_again(endpoint: str) -> None:
    from moto.emrserverless import models as emr_models
    from moto.kafka import models as kafka_models

    moto_ext.uninstall()
    assert emr_models.APPLICATION_STATUS == "STARTED"
    assert not hasattr(kafka_models.KafkaBackend, "get_bootstrap_brokers")
    moto_ext.install(CONFIG)
    assert emr_models.APPLICATION_STATUS == "CREATED"
    assert hasattr(kafka_models.KafkaBackend, "get_bootstrap_brokers")


def test_a_bucket_that_denies_plain_http_still_serves_the_stacks_tls_calls(client: Client) -> None:
    """infra/s3.tf denies requests without aws:SecureTransport; the emulator's calls stand for HTTPS ones."""
    s3 = client("s3")
    s3.create_bucket(Bucket="tls-only")
    deny_http = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": ["arn:aws:s3:::tls-only", "arn:aws:s3:::tls-only/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
    s3.put_bucket_policy(Bucket="tls-only", Policy=json.dumps(deny_http))
    s3.put_object(Bucket="tls-only", Key="jobs/job.py", Body=b"print('hi')")
    assert s3.get_object(Bucket="tls-only", Key="jobs/job.py")["Body"].read() == b"print('hi')"

    deny_all = {**deny_http, "Statement": [{**deny_http["Statement"][0], "Condition": {}}]}  # type: ignore[dict-item]
    del deny_all["Statement"][0]["Condition"]
    s3.put_bucket_policy(Bucket="tls-only", Policy=json.dumps(deny_all))
    assert error_of(lambda: s3.get_object(Bucket="tls-only", Key="jobs/job.py"))[1] == 403, "a plain Deny still denies"


def test_a_retried_security_group_rule_request_gets_its_first_answer_but_a_new_duplicate_is_refused(
    client: Client,
) -> None:
    """A slow emulator can make the aws provider's SDK retry an authorization that succeeded (the same
    amz-sdk-invocation-id); a second request for the same rule, as two identical rules would send, is refused."""
    ec2 = client("ec2")
    invocation = {"id": "retried-operation"}
    # botocore sets the header just before sending: an SDK retry is the same request with the same id.
    ec2.meta.events.register_last(
        "before-send.ec2.*", lambda request, **_: request.headers.__setitem__("amz-sdk-invocation-id", invocation["id"])
    )
    vpc = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    rule = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    first = ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[rule])["SecurityGroupRules"]
    retried = ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[rule])["SecurityGroupRules"]
    assert [r["SecurityGroupRuleId"] for r in retried] == [r["SecurityGroupRuleId"] for r in first]
    invocation["id"] = "another-operation"
    assert error_of(lambda: ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[rule]))[0] == (
        "InvalidPermission.Duplicate"
    )


def test_a_log_groups_key_can_be_associated_and_removed(client: Client) -> None:
    """The aws provider calls AssociateKmsKey when a group's key changes (an adopted DocumentDB log group)."""
    logs = client("logs")
    logs.create_log_group(logGroupName="/aws/docdb/pipeline/audit")
    key = client("kms").create_key()["KeyMetadata"]["Arn"]
    logs.associate_kms_key(logGroupName="/aws/docdb/pipeline/audit", kmsKeyId=key)
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/aws/docdb/pipeline/audit")["logGroups"]
    assert group["kmsKeyId"] == key
    logs.disassociate_kms_key(logGroupName="/aws/docdb/pipeline/audit")
    (group,) = logs.describe_log_groups(logGroupNamePrefix="/aws/docdb/pipeline/audit")["logGroups"]
    assert "kmsKeyId" not in group
