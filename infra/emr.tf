# --- EMR Serverless: the Spark application the streaming job runs on ---------------------------

resource "aws_emrserverless_application" "this" {
  name          = local.name
  release_label = var.emr_release_label
  type          = "SPARK"
  architecture  = "X86_64"

  maximum_capacity {
    cpu    = var.emr_max_capacity.cpu
    memory = var.emr_max_capacity.memory
    disk   = var.emr_max_capacity.disk
  }

  auto_start_configuration {
    enabled = true
  }

  auto_stop_configuration {
    enabled              = true
    idle_timeout_minutes = var.emr_idle_timeout_minutes
  }

  # Private subnets only; the group reaches MSK (9098) and DocumentDB (27017), S3 by the gateway endpoint.
  network_configuration {
    subnet_ids         = local.private_subnet_ids
    security_group_ids = [aws_security_group.workload["emr"].id]
  }
}
