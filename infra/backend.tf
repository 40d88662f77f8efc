# Remote state in S3 with Terraform's native lock file (no DynamoDB table).
# Bucket, key and region come from env/<name>.s3.tfbackend:
#   terraform init -backend-config=env/dev.s3.tfbackend
terraform {
  backend "s3" {}
}
