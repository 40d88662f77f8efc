output "region" {
  description = "AWS region of the stack."
  value       = var.region
  # A targeted apply (make deploy's first step) writes only outputs that depend on its targets.
  depends_on = [aws_ecr_repository.app]
}

output "artifacts_bucket" {
  description = "S3 bucket for the job, its venv archive, connector jars, checkpoints and EMR logs."
  value       = aws_s3_bucket.artifacts.bucket
}

output "ecr_repository_url" {
  description = "ECR repository of the application image."
  value       = aws_ecr_repository.app.repository_url
}

output "msk_bootstrap_brokers" {
  description = "MSK bootstrap brokers for IAM authentication over TLS (port 9098)."
  value       = local.msk_bootstrap
}

output "msk_cluster_arn" {
  description = "MSK cluster ARN."
  value       = local.msk_cluster_arn
}

output "emr_application_id" {
  description = "EMR Serverless application id (sensor-pipeline emr submit --application-id)."
  value       = aws_emrserverless_application.this.id
}

output "emr_job_role_arn" {
  description = "Runtime role of the Spark job runs."
  value       = aws_iam_role.emr_job.arn
}

output "emr_log_group" {
  description = "CloudWatch log group of the Spark job runs."
  value       = aws_cloudwatch_log_group.this["emr"].name
}

output "docdb_uri" {
  description = "DocumentDB address with TLS options, without credentials."
  value       = local.docdb_uri
}

output "docdb_secret_arn" {
  description = "Secrets Manager secret holding the DocumentDB credentials (managed by DocumentDB)."
  value       = local.docdb_secret_arn
}

output "ecs_cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "init_task" {
  description = "What `make deploy` needs to run the one-off init task (topics, indexes)."
  value = {
    task_definition = aws_ecs_task_definition.this["init"].arn
    subnets         = local.private_subnet_ids
    security_group  = aws_security_group.workload["init"].id
  }
}

output "dashboard_url" {
  description = "Public URL of the live dashboard."
  value       = "${local.dashboard_https ? "https" : "http"}://${local.dashboard_host}/dashboard"
}
