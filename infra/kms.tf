# One customer-managed key for the pipeline's data at rest: S3, MSK, DocumentDB, logs, secrets.
resource "aws_kms_key" "this" {
  description             = "${local.name}: data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 14
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:in a key policy, resource * means this key; the account root statement is AWS's default
  #checkov:skip=CKV_AWS_356:in a key policy, resource * means this key
  #checkov:skip=CKV_AWS_109:the account root must administer the key or it becomes unmanageable
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/${var.project}/${var.environment}/*",
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/docdb/${local.name}/*",
      ]
    }
  }
}
