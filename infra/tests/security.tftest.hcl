# Security properties of the stack, checked offline: `terraform test` with a mocked AWS provider.

mock_provider "aws" {
  override_during = plan

  mock_data "aws_availability_zones" {
    # us-east-1a is use1-az3 here: EMR Serverless does not run there, so no subnet may use it.
    defaults = {
      names    = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]
      zone_ids = ["use1-az3", "use1-az6", "use1-az1", "use1-az2"]
    }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_msk_cluster" {
    defaults = {
      arn                        = "arn:aws:kafka:us-east-1:123456789012:cluster/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1"
      bootstrap_brokers_sasl_iam = "b-1.msk.example:9098,b-2.msk.example:9098"
    }
  }
  mock_resource "aws_docdb_cluster" {
    defaults = {
      endpoint = "docdb.example"
      port     = 27017
      master_user_secret = [{
        secret_arn    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-abc"
        kms_key_id    = "arn:aws:kms:us-east-1:123456789012:key/abc"
        secret_status = "active"
      }]
    }
  }
  # Every subnet is "subnet-private" unless overridden below: public ones are "subnet-public".
  mock_resource "aws_subnet" {
    defaults = { id = "subnet-private" }
  }
  mock_resource "aws_security_group" {
    defaults = { id = "sg-workload" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::sensor-pipeline-dev-artifacts-x", bucket = "sensor-pipeline-dev-artifacts-x" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/abc" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:/sensor-pipeline/dev/x" }
  }
  mock_resource "aws_ecr_repository" {
    defaults = { arn = "arn:aws:ecr:us-east-1:123456789012:repository/sensor-pipeline-dev/app", repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sensor-pipeline-dev/app" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/mock:1" }
  }
  mock_resource "aws_lb" {
    defaults = { dns_name = "sensor-pipeline-dev-dash-1.us-east-1.elb.amazonaws.com", arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/mock/1" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/mock/1" }
  }
  mock_resource "aws_service_discovery_service" {
    defaults = { arn = "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-mock" }
  }
  mock_resource "aws_service_discovery_private_dns_namespace" {
    defaults = { name = "dev.sensor-pipeline.internal" }
  }
}

override_resource {
  target          = aws_subnet.public
  override_during = plan
  values          = { id = "subnet-public" }
}

variables {
  environment             = "dev"
  dashboard_allowed_cidrs = ["203.0.113.0/24"]
}

run "msk_accepts_only_iam_over_tls_and_encrypts_at_rest" {
  command = plan

  assert {
    condition     = aws_msk_cluster.this[0].client_authentication[0].sasl[0].iam == true
    error_message = "MSK must use IAM authentication"
  }
  assert {
    condition     = aws_msk_cluster.this[0].client_authentication[0].unauthenticated == false
    error_message = "MSK must not accept unauthenticated clients"
  }
  assert {
    condition     = aws_msk_cluster.this[0].encryption_info[0].encryption_in_transit[0].client_broker == "TLS"
    error_message = "MSK must not have a plaintext listener"
  }
  assert {
    condition     = aws_msk_cluster.this[0].encryption_info[0].encryption_at_rest_kms_key_arn == aws_kms_key.this.arn
    error_message = "MSK must encrypt at rest with the stack's KMS key"
  }
  assert {
    condition     = aws_msk_cluster.this[0].logging_info[0].broker_logs[0].cloudwatch_logs[0].enabled
    error_message = "MSK broker logs must go to CloudWatch"
  }
  assert {
    condition     = aws_msk_cluster.this[0].kafka_version == "4.1.x.kraft" && aws_msk_configuration.this[0].kafka_versions == toset(["4.1.x.kraft"])
    error_message = "MSK must run Kafka 4.1 in KRaft mode (4.1.x.kraft), the line of the local broker"
  }
}

run "data_services_live_in_private_subnets_only" {
  command = plan

  assert {
    condition     = alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch == false])
    error_message = "no subnet may hand out public IPs"
  }
  assert {
    condition     = toset(aws_msk_cluster.this[0].broker_node_group_info[0].client_subnets) == toset(["subnet-private"])
    error_message = "MSK brokers must be in the private subnets"
  }
  assert {
    condition     = toset(aws_docdb_subnet_group.this.subnet_ids) == toset(["subnet-private"])
    error_message = "DocumentDB must be in the private subnets"
  }
  assert {
    condition     = toset(aws_emrserverless_application.this.network_configuration[0].subnet_ids) == toset(["subnet-private"])
    error_message = "EMR Serverless must run in the private subnets"
  }
  assert {
    condition     = alltrue([for s in aws_ecs_service.this : s.network_configuration[0].assign_public_ip == false])
    error_message = "Fargate tasks must not get public IPs"
  }
  assert {
    condition     = alltrue([for s in aws_ecs_service.this : toset(s.network_configuration[0].subnets) == toset(["subnet-private"])])
    error_message = "Fargate tasks must run in the private subnets"
  }
  assert {
    condition     = toset(aws_lb.dashboard.subnets) == toset(["subnet-public"])
    error_message = "only the dashboard's load balancer is in the public subnets"
  }
  assert {
    condition     = length(aws_nat_gateway.this) == 0 && length(aws_vpc_endpoint.interface) == 6
    error_message = "by default no NAT gateway: VPC endpoints reach the AWS APIs"
  }
}

run "documentdb_requires_tls_is_encrypted_and_keeps_its_password_in_secrets_manager" {
  command = plan

  assert {
    condition     = one([for p in aws_docdb_cluster_parameter_group.this.parameter : p.value if p.name == "tls"]) == "enabled"
    error_message = "DocumentDB must require TLS"
  }
  assert {
    condition     = aws_docdb_cluster.this.storage_encrypted && aws_docdb_cluster.this.kms_key_id == aws_kms_key.this.arn
    error_message = "DocumentDB must be encrypted with the stack's KMS key"
  }
  assert {
    condition     = aws_docdb_cluster.this.manage_master_user_password == true && aws_docdb_cluster.this.master_password == null
    error_message = "the master password must be generated and kept by Secrets Manager, never set in Terraform"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.docdb : r.referenced_security_group_id == "sg-workload" && r.cidr_ipv4 == null]) && toset(keys(aws_vpc_security_group_ingress_rule.docdb)) == toset(["emr", "init"])
    error_message = "DocumentDB must admit only the pipeline's security group, not CIDR ranges"
  }
}

run "no_secret_values_in_task_definitions" {
  command = plan

  assert {
    condition = alltrue([
      for td in aws_ecs_task_definition.this : alltrue([
        for c in jsondecode(td.container_definitions) : alltrue([
          for e in c.environment : !can(regex("(?i)password|secret_value", e.name))
        ])
      ])
    ])
    error_message = "task definitions must not carry secret values in their environment"
  }
  assert {
    condition = alltrue([
      for td in aws_ecs_task_definition.this : alltrue([for c in jsondecode(td.container_definitions) : c.user == "10001" && c.readonlyRootFilesystem])
    ])
    error_message = "containers must run as non-root with a read-only root filesystem"
  }
}

run "storage_is_encrypted_private_and_versioned" {
  command = plan

  assert {
    condition     = aws_s3_bucket_public_access_block.artifacts.block_public_acls && aws_s3_bucket_public_access_block.artifacts.restrict_public_buckets
    error_message = "the artifacts bucket must block public access"
  }
  assert {
    condition     = aws_s3_bucket_versioning.artifacts.versioning_configuration[0].status == "Enabled"
    error_message = "the artifacts bucket must be versioned"
  }
  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.artifacts.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms"
    error_message = "the artifacts bucket must be KMS-encrypted"
  }
  assert {
    condition     = aws_kms_key.this.enable_key_rotation
    error_message = "the KMS key must rotate"
  }
}

run "every_log_group_has_retention" {
  command = plan

  assert {
    condition     = alltrue([for g in aws_cloudwatch_log_group.this : g.retention_in_days == 30 && g.kms_key_id != null])
    error_message = "every log group must have the configured retention and KMS encryption"
  }
}

run "iam_is_scoped_to_named_arns" {
  command = plan

  assert {
    condition     = data.aws_iam_policy_document.producer.statement[1].resources == toset(["arn:aws:kafka:us-east-1:123456789012:topic/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1/RawSensorData"])
    error_message = "the producer may write only RawSensorData"
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.dashboard.statement : s.resources if s.sid == "ReadCleanAndDeadLetters"]) == toset(["arn:aws:kafka:us-east-1:123456789012:topic/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1/CleanSensorData", "arn:aws:kafka:us-east-1:123456789012:topic/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1/InvalidSensorData"])
    error_message = "the dashboard may read only CleanSensorData and InvalidSensorData"
  }
  assert {
    condition = alltrue([
      for s in data.aws_iam_policy_document.dashboard.statement : alltrue([for a in s.actions : !contains(["kafka-cluster:WriteData", "kafka-cluster:AlterGroup", "kafka-cluster:CreateTopic"], a)])
    ])
    error_message = "the dashboard only reads: no writes, no group changes, no topics"
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.dashboard.statement : s.resources if s.sid == "JobProgress"]) == toset(["arn:aws:kafka:us-east-1:123456789012:group/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1/structure_validate_store"])
    error_message = "the dashboard may describe only the job's progress group"
  }
  assert {
    condition = alltrue([
      for s in data.aws_iam_policy_document.emr_job.statement : alltrue([for r in s.resources : r != "*" && !endswith(r, ":*:*")])
    ])
    error_message = "the Spark job's role must name its resources"
  }
  assert {
    condition     = contains(one([for s in data.aws_iam_policy_document.emr_job.statement : s.resources if s.sid == "ConsumerGroups"]), "arn:aws:kafka:us-east-1:123456789012:group/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1/structure_validate_store")
    error_message = "the Spark job must be allowed to commit its progress to its group"
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.emr_job.statement : s.resources if s.sid == "DocumentDbSecret"]) == toset(["arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-abc"])
    error_message = "the Spark job may read only the DocumentDB secret"
  }
}

run "emr_runs_the_pinned_spark_release_with_bounded_capacity" {
  command = plan

  assert {
    condition     = aws_emrserverless_application.this.release_label == "emr-spark-8.0.0" && aws_emrserverless_application.this.type == "SPARK"
    error_message = "EMR Serverless must run emr-spark-8.0.0 (Spark 4.0.2, as pinned locally)"
  }
  assert {
    condition     = aws_emrserverless_application.this.auto_stop_configuration[0].enabled && aws_emrserverless_application.this.maximum_capacity[0].cpu == "8 vCPU"
    error_message = "EMR Serverless must auto-stop and have a maximum capacity"
  }
}

run "serverless_msk_is_an_option" {
  command = plan

  variables {
    msk_mode = "serverless"
  }

  assert {
    condition     = length(aws_msk_cluster.this) == 0 && length(aws_msk_serverless_cluster.this) == 1
    error_message = "msk_mode = serverless must create MSK Serverless instead of brokers"
  }
  assert {
    condition     = aws_msk_serverless_cluster.this[0].client_authentication[0].sasl[0].iam[0].enabled
    error_message = "MSK Serverless must use IAM authentication"
  }
}

run "bad_variables_are_rejected" {
  command = plan

  variables {
    msk_mode = "zookeeper"
  }

  expect_failures = [var.msk_mode]
}

run "subnets_only_in_zones_emr_serverless_supports" {
  command = plan

  assert {
    condition     = [for s in aws_subnet.private : s.availability_zone] == ["us-east-1b", "us-east-1c"]
    error_message = "subnets must skip use1-az3 (us-east-1a here), where EMR Serverless does not run"
  }
}

run "the_init_task_can_reach_and_read_the_store" {
  command = plan

  assert {
    condition = alltrue([
      for name in ["SP_MONGO_URI", "SP_MONGO_SECRET_ARN", "SP_MONGO_TLS_CA_FILE", "SP_KAFKA_BOOTSTRAP"] :
      contains([for e in jsondecode(aws_ecs_task_definition.this["init"].container_definitions)[0].environment : e.name], name)
    ])
    error_message = "the init task creates indexes: it needs the DocumentDB address, its secret ARN and the CA bundle"
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.init.statement : s.resources if s.sid == "DocumentDbSecret"]) == toset(["arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-abc"])
    error_message = "the init task's role must read the DocumentDB secret, and only it"
  }
}

run "dashboard_is_not_open_to_the_world" {
  command = plan

  assert {
    condition     = [for r in aws_vpc_security_group_ingress_rule.alb : r.cidr_ipv4] == ["203.0.113.0/24"]
    error_message = "the load balancer admits only the configured CIDR blocks"
  }
  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.this["dashboard"].container_definitions)[0].environment : e.value if e.name == "SP_DASHBOARD_ALLOW_ORIGIN"
    ]) != "*"
    error_message = "the websocket origin must be the dashboard's own host, not *"
  }
}

run "dashboard_serves_https_with_a_certificate" {
  command = plan

  variables {
    dashboard_certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
    dashboard_domain          = "water.example.org"
  }

  assert {
    condition     = length(aws_lb_listener.https) == 1 && aws_lb_listener.http.default_action[0].type == "redirect"
    error_message = "with a certificate, HTTPS serves the dashboard and HTTP redirects to it"
  }
  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.this["dashboard"].container_definitions)[0].environment : e.value if e.name == "SP_DASHBOARD_ALLOW_ORIGIN"
    ]) == "water.example.org:443"
    error_message = "the websocket origin must be the configured domain on 443"
  }
  assert {
    condition     = output.dashboard_url == "https://water.example.org/dashboard"
    error_message = "the dashboard URL must use the domain and HTTPS"
  }
}

run "an_open_dashboard_is_refused" {
  command = plan

  variables {
    dashboard_allowed_cidrs = []
  }
  expect_failures = [var.dashboard_allowed_cidrs]
}

run "the_job_uses_the_key_only_through_s3_for_its_bucket" {
  command = plan

  assert {
    condition = one([for s in data.aws_iam_policy_document.emr_job.statement : s if s.sid == "KmsThroughS3"]) != null && alltrue([
      for s in data.aws_iam_policy_document.emr_job.statement : (
        !anytrue([for a in s.actions : startswith(a, "kms:")]) || (
          contains([for c in s.condition : c.variable], "kms:ViaService") &&
          flatten([for c in s.condition : c.values if c.variable == "kms:ViaService"]) == ["s3.us-east-1.amazonaws.com"] &&
          contains(flatten([for c in s.condition : c.values if c.variable == "kms:EncryptionContext:aws:s3:arn"]), "arn:aws:s3:::sensor-pipeline-dev-artifacts-x")
        )
      )
    ])
    error_message = "the Spark job's KMS grant must hold only via S3 (kms:ViaService) for its bucket (encryption context)"
  }
}

run "the_checkpoint_is_usable_by_hadoops_s3_clients" {
  command = plan

  # Hadoop's S3 clients look up and write the folder's own key and its marker, not only keys under it.
  assert {
    condition = length(setsubtract(
      ["arn:aws:s3:::sensor-pipeline-dev-artifacts-x/checkpoints", "arn:aws:s3:::sensor-pipeline-dev-artifacts-x/checkpoints/", "arn:aws:s3:::sensor-pipeline-dev-artifacts-x/checkpoints/*"],
      one([for s in data.aws_iam_policy_document.emr_job.statement : s.resources if s.sid == "Checkpoints"])
    )) == 0
    error_message = "the checkpoint grant must name checkpoints, checkpoints/ and checkpoints/*"
  }
  assert {
    condition     = contains(flatten([for s in data.aws_iam_policy_document.emr_job.statement : flatten([for c in s.condition : c.values]) if s.sid == "ListOwnPrefixes"]), "checkpoints")
    error_message = "the job must be able to list the checkpoint folder's own key (prefix \"checkpoints\")"
  }
}

run "flow_logs_trust_only_this_accounts_flow_logs" {
  command = plan

  assert {
    condition = alltrue([
      for v in ["aws:SourceAccount", "aws:SourceArn"] :
      contains([for c in data.aws_iam_policy_document.assume_flow_logs.statement[0].condition : c.variable], v)
    ])
    error_message = "the flow-logs role's trust must be conditioned on the source account and flow-log ARN"
  }
}

run "documentdb_log_groups_are_the_stacks" {
  command = plan

  assert {
    condition = alltrue([
      for k in ["audit", "profiler"] :
      aws_cloudwatch_log_group.docdb[k].name == "/aws/docdb/sensor-pipeline-dev/${k}" && aws_cloudwatch_log_group.docdb[k].kms_key_id != null && aws_cloudwatch_log_group.docdb[k].retention_in_days == 30
    ])
    error_message = "DocumentDB's exported log groups must be created by Terraform, encrypted, with retention"
  }
}

run "workloads_reach_only_what_they_talk_to" {
  command = plan

  assert {
    condition     = length([for r in aws_vpc_security_group_egress_rule.workload : r if r.ip_protocol == "-1" || r.cidr_ipv4 == "0.0.0.0/0"]) == 0
    error_message = "no workload may send anything anywhere"
  }
  assert {
    condition     = toset(keys(aws_vpc_security_group_egress_rule.workload)) == toset(["emr-msk", "emr-docdb", "producer-msk", "producer-api", "dashboard-msk", "init-msk", "init-docdb"])
    error_message = "egress: the job and the init task to MSK and DocumentDB, the producer to MSK and the API, the dashboard to MSK"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_egress_rule.workload_endpoints : r.from_port == 443 && r.to_port == 443])
    error_message = "AWS APIs are reached over HTTPS only"
  }
}

run "the_dashboard_gets_time_to_start_and_its_check_builds_no_session" {
  command = plan

  assert {
    condition     = aws_ecs_service.this["dashboard"].health_check_grace_period_seconds >= 60
    error_message = "the dashboard service needs a health-check grace period (it reads its history first)"
  }
  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.this["dashboard"].container_definitions)[0].healthCheck.command[1], "/dashboard/metadata")
    error_message = "the dashboard's container health check must use Bokeh's metadata route (no session per check)"
  }
}

run "the_job_may_use_only_its_own_transactional_ids" {
  command = plan

  # One transactional.id per source partition: <job group>.<raw topic>.<partition> (config.transactional_id).
  assert {
    condition     = one([for s in data.aws_iam_policy_document.emr_job.statement : s.resources if s.sid == "Transactions"]) == toset(["arn:aws:kafka:us-east-1:123456789012:transactional-id/sensor-pipeline-dev/11111111-2222-3333-4444-555555555555-1/structure_validate_store.RawSensorData.*"])
    error_message = "the job's transactions must be limited to its own transactional ids"
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.emr_job.statement : s.actions if s.sid == "Transactions"]) == toset(["kafka-cluster:AlterTransactionalId", "kafka-cluster:DescribeTransactionalId"])
    error_message = "the job must be able to describe and alter (use) its transactional ids"
  }
}

run "the_jobs_committed_offsets_outlive_the_raw_records" {
  command = plan

  # The job's group has no members: its offsets expire offsets.retention.minutes after their last commit.
  assert {
    condition     = strcontains(aws_msk_configuration.this[0].server_properties, "offsets.retention.minutes=43200") && strcontains(aws_msk_configuration.this[0].server_properties, "log.retention.hours=168")
    error_message = "the job's group offsets (30 days) must outlive the raw topic's records (7 days)"
  }
  assert {
    condition     = strcontains(aws_msk_configuration.this[0].server_properties, "transaction.state.log.replication.factor=2") && strcontains(aws_msk_configuration.this[0].server_properties, "transaction.state.log.min.isr=1")
    error_message = "the transaction log must be replicable on the cluster's brokers (2 AZs here)"
  }
}
