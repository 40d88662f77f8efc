locals {
  name       = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # Zones chosen by zone id among those EMR Serverless runs in (zone names differ between accounts;
  # ids do not). Regions missing from var.emr_zone_ids use every available zone.
  emr_zone_ids = lookup(var.emr_zone_ids, var.region, null)
  usable_azs = [
    for i, name in data.aws_availability_zones.available.names : name
    if local.emr_zone_ids == null || contains(coalesce(local.emr_zone_ids, []), data.aws_availability_zones.available.zone_ids[i])
  ]
  azs = slice(local.usable_azs, 0, var.az_count)

  topics = {
    raw     = "RawSensorData"
    clean   = "CleanSensorData"
    invalid = "InvalidSensorData"
  }
  # The Kafka consumer group the Spark job commits its processed offsets to, in the same transaction
  # as its output: without a checkpoint the job starts from them; the dashboard's lag and MSK's
  # consumer-lag metrics read them.
  job_group = "structure_validate_store"

  # Prefixes of the artifacts bucket, each granted only to the workloads that need it.
  s3_prefixes = {
    jobs        = "jobs/"
    checkpoints = "checkpoints/"
    logs        = "emr-logs/"
  }
}
