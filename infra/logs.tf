# Every log group of the stack, with retention and KMS encryption.
resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:retention is a variable (default 30 days); a year of debug logs costs without use for dev
  for_each          = toset(["msk", "emr", "api", "producer", "dashboard", "init", "vpc-flow"])
  name              = "/${var.project}/${var.environment}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}
