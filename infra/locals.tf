locals {
  name       = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  topics = {
    raw     = "RawSensorData"
    clean   = "CleanSensorData"
    invalid = "InvalidSensorData"
  }

  # Prefixes of the artifacts bucket, each granted only to the workloads that need it.
  s3_prefixes = {
    jobs        = "jobs/"
    checkpoints = "checkpoints/"
    logs        = "emr-logs/"
  }
}
