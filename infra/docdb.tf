# --- Amazon DocumentDB: TLS required, KMS-encrypted, master password managed in Secrets Manager ---
# manage_master_user_password: DocumentDB generates the password and keeps it in a Secrets Manager
# secret it rotates; the value never appears in Terraform state, variables, outputs or task definitions.

resource "aws_docdb_subnet_group" "this" {
  name       = local.name
  subnet_ids = local.private_subnet_ids
}

resource "aws_docdb_cluster_parameter_group" "this" {
  family      = "docdb5.0"
  name        = local.name
  description = "TLS required; audit and profiler logs on"

  parameter {
    name  = "tls"
    value = "enabled"
  }
  parameter {
    name  = "audit_logs"
    value = "enabled"
  }
  parameter {
    name  = "profiler"
    value = "enabled"
  }
}

resource "aws_docdb_cluster" "this" {
  cluster_identifier              = local.name
  engine                          = "docdb"
  engine_version                  = "5.0.0"
  port                            = 27017
  master_username                 = "pipeline"
  manage_master_user_password     = true
  db_subnet_group_name            = aws_docdb_subnet_group.this.name
  db_cluster_parameter_group_name = aws_docdb_cluster_parameter_group.this.name
  vpc_security_group_ids          = [aws_security_group.docdb.id]
  storage_encrypted               = true
  kms_key_id                      = aws_kms_key.this.arn
  deletion_protection             = var.docdb_deletion_protection
  backup_retention_period         = 7
  preferred_backup_window         = "03:00-04:00"
  skip_final_snapshot             = !var.docdb_deletion_protection
  final_snapshot_identifier       = var.docdb_deletion_protection ? "${local.name}-final" : null
  enabled_cloudwatch_logs_exports = ["audit", "profiler"]

  # DocumentDB writes its exports to /aws/docdb/<cluster>/<log>; made here first, they have this
  # stack's retention and key and go with it on destroy (else DocumentDB creates them, unencrypted and
  # kept forever).
  depends_on = [aws_cloudwatch_log_group.docdb]
}

resource "aws_cloudwatch_log_group" "docdb" {
  #checkov:skip=CKV_AWS_338:retention is a variable (default 30 days), as for the stack's other log groups (logs.tf)
  for_each          = toset(["audit", "profiler"])
  name              = "/aws/docdb/${local.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

resource "aws_docdb_cluster_instance" "this" {
  count                      = var.docdb_instance_count
  identifier                 = "${local.name}-${count.index}"
  cluster_identifier         = aws_docdb_cluster.this.id
  instance_class             = var.docdb_instance_class
  auto_minor_version_upgrade = true
}

locals {
  docdb_secret_arn = aws_docdb_cluster.this.master_user_secret[0].secret_arn
  # Credentials come from the secret at run time; the URI carries only the address and TLS options.
  docdb_uri = "mongodb://${aws_docdb_cluster.this.endpoint}:${aws_docdb_cluster.this.port}/?tls=true&replicaSet=rs0&readPreference=secondaryPreferred&retryWrites=false"
}
