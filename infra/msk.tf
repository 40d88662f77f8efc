# --- Amazon MSK: IAM authentication over TLS only, encrypted at rest, broker logs to CloudWatch ---

locals {
  msk_provisioned  = var.msk_mode == "provisioned"
  msk_cluster_arn  = local.msk_provisioned ? aws_msk_cluster.this[0].arn : aws_msk_serverless_cluster.this[0].arn
  msk_cluster_name = local.name
  # kafka-cluster:* resources are named <type>/<cluster name>/<cluster uuid>/<name>.
  msk_cluster_uuid     = element(split("/", local.msk_cluster_arn), 2)
  msk_topic_arn_prefix = "arn:${local.partition}:kafka:${var.region}:${local.account_id}:topic/${local.msk_cluster_name}/${local.msk_cluster_uuid}"
  msk_group_arn_prefix = "arn:${local.partition}:kafka:${var.region}:${local.account_id}:group/${local.msk_cluster_name}/${local.msk_cluster_uuid}"
  msk_txn_arn_prefix   = "arn:${local.partition}:kafka:${var.region}:${local.account_id}:transactional-id/${local.msk_cluster_name}/${local.msk_cluster_uuid}"
  msk_bootstrap        = local.msk_provisioned ? aws_msk_cluster.this[0].bootstrap_brokers_sasl_iam : aws_msk_serverless_cluster.this[0].bootstrap_brokers_sasl_iam
}

resource "aws_msk_configuration" "this" {
  count          = local.msk_provisioned ? 1 : 0
  name           = local.name
  kafka_versions = [var.kafka_version]
  # Topics are created by the init task, never implicitly by a typo'd producer.
  # The job's consumer group has no members: Kafka expires each partition's committed offset
  # offsets.retention.minutes after its last commit ("For standalone consumers ... offsets are expired
  # after the time of the last commit plus this retention period", msk-configuration-properties). The
  # job relies on them, so they outlive the raw topic's records by far (30 days against 7): an offset
  # can only expire once every record below it is gone.
  # The transaction log is replicated like the topics (the Apache default, 3, needs 3 brokers).
  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=${min(var.az_count, 3)}
    min.insync.replicas=${min(var.az_count, 3) - 1}
    num.partitions=${var.topic_partitions}
    log.retention.hours=168
    offsets.retention.minutes=43200
    transaction.state.log.replication.factor=${min(var.az_count, 3)}
    transaction.state.log.min.isr=${min(var.az_count, 3) - 1}
  PROPERTIES
}

resource "aws_msk_cluster" "this" {
  count = local.msk_provisioned ? 1 : 0

  lifecycle {
    precondition {
      condition     = !(startswith(var.kafka_version, "4.") && var.msk_broker_instance_type == "kafka.t3.small")
      error_message = "kafka.t3.small brokers do not run Kafka 4.x on MSK: choose kafka.m7g.large (or msk_mode = serverless)."
    }
  }

  cluster_name           = local.msk_cluster_name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.az_count
  enhanced_monitoring    = "PER_BROKER"

  broker_node_group_info {
    instance_type   = var.msk_broker_instance_type
    client_subnets  = local.private_subnet_ids
    security_groups = [aws_security_group.msk.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.msk_broker_volume_gb
      }
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam = true
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.this.arn
    encryption_in_transit {
      client_broker = "TLS" # no plaintext listener
      in_cluster    = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this[0].arn
    revision = aws_msk_configuration.this[0].latest_revision
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.this["msk"].name
      }
    }
  }
}

resource "aws_msk_serverless_cluster" "this" {
  count        = local.msk_provisioned ? 0 : 1
  cluster_name = local.msk_cluster_name

  vpc_config {
    subnet_ids         = local.private_subnet_ids
    security_group_ids = [aws_security_group.msk.id]
  }

  client_authentication {
    sasl {
      iam {
        enabled = true
      }
    }
  }
}
