terraform {
  # 1.10+: S3 backend native locking (use_lockfile); 1.11+: write-only arguments.
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}
