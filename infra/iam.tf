# --- IAM: one role per workload, least privilege, scoped to named ARNs ------------------------

locals {
  cluster_arn_for_iam = local.msk_cluster_arn
  topic_arns          = { for k, t in local.topics : k => "${local.msk_topic_arn_prefix}/${t}" }
}

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# ECS task execution: pull the image, write logs, read the DocumentDB secret for injection.
resource "aws_iam_role" "task_execution" {
  name               = "${local.name}-task-execution"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

data "aws_iam_policy_document" "task_execution" {
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.app.arn]
  }
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # this action has no resource-level permissions
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for k in ["api", "producer", "dashboard", "init"] : "${aws_cloudwatch_log_group.this[k].arn}:*"]
  }
}

resource "aws_iam_role_policy" "task_execution" {
  role   = aws_iam_role.task_execution.id
  policy = data.aws_iam_policy_document.task_execution.json
}

# Task roles: what the application code itself may do.
resource "aws_iam_role" "task" {
  for_each           = toset(["api", "producer", "dashboard", "init"])
  name               = "${local.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

data "aws_iam_policy_document" "producer" {
  statement {
    sid       = "Connect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [local.cluster_arn_for_iam]
  }
  statement {
    sid       = "WriteRaw"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = [local.topic_arns.raw]
  }
  statement {
    sid       = "IdempotentProducer"
    actions   = ["kafka-cluster:WriteDataIdempotently"]
    resources = [local.cluster_arn_for_iam]
  }
}

data "aws_iam_policy_document" "dashboard" {
  statement {
    sid       = "Connect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [local.cluster_arn_for_iam]
  }
  statement {
    sid       = "ReadCleanAndDeadLetters"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = [local.topic_arns.clean, local.topic_arns.invalid]
  }
  # The health row: RawSensorData's end offsets (ListOffsets: DescribeTopic) and the offsets the job
  # committed (OffsetFetch: DescribeGroup), as in "Semantics of IAM authorization policy actions and
  # resources", https://docs.aws.amazon.com/msk/latest/developerguide/kafka-actions.html
  statement {
    sid       = "RawOffsets"
    actions   = ["kafka-cluster:DescribeTopic"]
    resources = [local.topic_arns.raw]
  }
  statement {
    sid       = "JobProgress"
    actions   = ["kafka-cluster:DescribeGroup"]
    resources = ["${local.msk_group_arn_prefix}/${local.job_group}"]
  }
}

data "aws_iam_policy_document" "init" {
  statement {
    sid       = "Connect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [local.cluster_arn_for_iam]
  }
  statement {
    sid       = "CreateTopics"
    actions   = ["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic"]
    resources = values(local.topic_arns)
  }
  statement {
    sid       = "DocumentDbSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.docdb_secret_arn]
  }
}

resource "aws_iam_role_policy" "task" {
  for_each = {
    producer  = data.aws_iam_policy_document.producer.json
    dashboard = data.aws_iam_policy_document.dashboard.json
    init      = data.aws_iam_policy_document.init.json
  }
  role   = aws_iam_role.task[each.key].id
  policy = each.value
}

# EMR Serverless job runtime role: Kafka in and out, the checkpoint and artifact prefixes, the secret.
data "aws_iam_policy_document" "assume_emr" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["emr-serverless.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "emr_job" {
  name               = "${local.name}-emr-job"
  assume_role_policy = data.aws_iam_policy_document.assume_emr.json
}

data "aws_iam_policy_document" "emr_job" {
  statement {
    sid       = "KafkaConnect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster", "kafka-cluster:WriteDataIdempotently"]
    resources = [local.cluster_arn_for_iam]
  }
  statement {
    sid       = "ReadRaw"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = [local.topic_arns.raw]
  }
  statement {
    sid       = "WriteCleanAndDeadLetters"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = [local.topic_arns.clean, local.topic_arns.invalid]
  }
  # Spark's source groups, and the job's group, whose offsets each slice's transaction commits
  # (TxnOffsetCommit, AddOffsetsToTxn: AlterGroup = READ GROUP; read back stable: DescribeGroup).
  statement {
    sid       = "ConsumerGroups"
    actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
    resources = ["${local.msk_group_arn_prefix}/spark-kafka-source-*", "${local.msk_group_arn_prefix}/${local.job_group}"]
  }
  # The job's transactional producers, one per raw-topic partition: <job group>.<raw topic>.<partition>
  # (sensor_pipeline.config.Settings.transactional_id). InitProducerId, AddPartitionsToTxn, EndTxn need
  # WRITE TRANSACTIONAL_ID (AlterTransactionalId), FindCoordinator DESCRIBE (DescribeTransactionalId)
  # ("Semantics of IAM authorization policy actions and resources", MSK Developer Guide).
  statement {
    sid       = "Transactions"
    actions   = ["kafka-cluster:DescribeTransactionalId", "kafka-cluster:AlterTransactionalId"]
    resources = ["${local.msk_txn_arn_prefix}/${local.job_group}.${local.topics.raw}.*"]
  }
  statement {
    sid       = "ReadArtifacts"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/${local.s3_prefixes.jobs}*"]
  }
  # The checkpoint as Hadoop's S3 clients use a "directory": besides the keys under it, the key of the
  # directory itself and its marker ("checkpoints", "checkpoints/"), which they look up (HEAD) and write
  # when they create, probe or clean up the path, and multipart uploads they may abort. Hadoop's S3A
  # documentation grants exactly these three resources per path and these actions for write access
  # ("Restricting S3A operations through AWS Policies",
  # https://hadoop.apache.org/docs/stable/hadoop-aws/tools/hadoop-aws/assumed_roles.html); EMRFS's older
  # folder marker ("checkpoints_$folder$") is granted too.
  statement {
    sid     = "Checkpoints"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = flatten([
      for p in [local.s3_prefixes.checkpoints, local.s3_prefixes.logs] :
      [for key in [trimsuffix(p, "/"), "${trimsuffix(p, "/")}_$folder$", p, "${p}*"] : "${aws_s3_bucket.artifacts.arn}/${key}"]
    ])
  }
  statement {
    # A list names one of the job's prefixes; a request without a prefix (HeadBucket, which S3 authorizes
    # as s3:ListBucket, as Hadoop's and EMR's S3 clients send to probe a bucket) has no s3:prefix key and
    # passes (IfExists): AWS's EMR Serverless runtime-role example grants s3:ListBucket on the bucket.
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = flatten([for p in values(local.s3_prefixes) : [trimsuffix(p, "/"), "${p}*"]])
    }
  }
  statement {
    sid       = "CheckpointUploads"
    actions   = ["s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }
  statement {
    sid       = "DocumentDbSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.docdb_secret_arn]
  }
  # The bucket's SSE-KMS key, only as S3 uses it on the job's behalf for this bucket (an S3 Bucket Key:
  # the encryption context is the bucket's ARN). Reads need Decrypt, writes GenerateDataKey, multipart
  # writes both ("Using server-side encryption with AWS KMS keys", Amazon S3 User Guide; kms:ViaService,
  # https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service).
  statement {
    sid       = "KmsThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = [aws_s3_bucket.artifacts.arn]
    }
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.this["emr"].arn}:*"]
  }
  statement {
    # EMR Serverless looks up the run's log group before it writes (CloudWatch logging of job runs).
    sid       = "FindLogGroup"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
  }
}

resource "aws_iam_role_policy" "emr_job" {
  role   = aws_iam_role.emr_job.id
  policy = data.aws_iam_policy_document.emr_job.json
}

# VPC flow logs delivery; only for this account's flow logs (confused-deputy prevention, as AWS's
# example trust policy: https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html).
data "aws_iam_policy_document" "assume_flow_logs" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:vpc-flow-log/*"]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  count              = local.create_vpc ? 1 : 0
  name               = "${local.name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.assume_flow_logs.json
}

resource "aws_iam_role_policy" "flow_logs" {
  count = local.create_vpc ? 1 : 0
  role  = aws_iam_role.flow_logs[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    # AWS's flow-logs role policy (flow-logs-iam-role.html) also lists DescribeLogGroups, which has no
    # narrower resource than the account's log groups.
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = "${aws_cloudwatch_log_group.this["vpc-flow"].arn}:*"
      },
      {
        Effect   = "Allow"
        Action   = ["logs:DescribeLogGroups"]
        Resource = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"
      },
    ]
  })
}
