# --- general -----------------------------------------------------------------------------------

variable "project" {
  description = "Name prefix of every resource."
  type        = string
  default     = "sensor-pipeline"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.project))
    error_message = "project must be 3-21 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (dev, staging, prod); part of every resource name and the state key."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod", "local"], var.environment)
    error_message = "environment must be one of dev, staging, prod, local."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Extra tags for every resource (merged into the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "emulator" {
  description = "True when planning against the local AWS emulator (moto): skips credential and account checks."
  type        = bool
  default     = false
}

variable "emr_zone_ids" {
  description = "Availability Zone ids EMR Serverless supports, per region; subnets are placed only there. Source: EMR Serverless User Guide, 'Configuring VPC access' (us-east-1: not use1-az3)."
  type        = map(list(string))
  default = {
    "us-east-1" = ["use1-az1", "use1-az2", "use1-az4", "use1-az5", "use1-az6"]
  }
}

# --- network -----------------------------------------------------------------------------------

variable "az_count" {
  description = "Availability zones to spread subnets over (MSK needs one broker per AZ)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC created when existing_vpc is null."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "existing_vpc" {
  description = "Use an existing VPC instead of creating one: its id, private subnets (data services, EMR, tasks) and public subnets (load balancer)."
  type = object({
    vpc_id             = string
    private_subnet_ids = list(string)
    public_subnet_ids  = list(string)
  })
  default = null
}

variable "enable_nat_gateway" {
  description = "A NAT gateway for outbound internet from private subnets. Off by default: VPC endpoints cover ECR, logs, Secrets Manager, STS and S3, so nothing needs the internet."
  type        = bool
  default     = false
}

# --- MSK ---------------------------------------------------------------------------------------

variable "msk_mode" {
  description = "provisioned (brokers you size) or serverless (MSK Serverless, pay per use)."
  type        = string
  default     = "provisioned"

  validation {
    condition     = contains(["provisioned", "serverless"], var.msk_mode)
    error_message = "msk_mode must be provisioned or serverless."
  }
}

variable "kafka_version" {
  description = "MSK Kafka version. MSK names KRaft versions with a .kraft suffix: 4.1.x.kraft = Apache Kafka 4.1 (the local broker runs 4.1.1). See infra/README.md, 'Versions'."
  type        = string
  default     = "4.1.x.kraft"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.(x|[0-9]+)(\\.kraft)?$", var.kafka_version)) && (!startswith(var.kafka_version, "4.") || endswith(var.kafka_version, ".kraft"))
    error_message = "kafka_version must be an MSK version name; Kafka 4.x exists only in KRaft mode, named with .kraft (e.g. 4.1.x.kraft)."
  }
}

variable "msk_broker_instance_type" {
  description = "Broker instance type (provisioned mode). Kafka 4.x (KRaft) runs on M5/M7g Standard brokers; kafka.t3.small is refused with 4.x. For a cheap dev stack use msk_mode = \"serverless\"."
  type        = string
  default     = "kafka.m7g.large"

  validation {
    condition     = can(regex("^kafka\\.(t3\\.small|m5\\.[0-9]*x?large|m7g\\.[0-9]*x?large)$", var.msk_broker_instance_type))
    error_message = "msk_broker_instance_type must be an MSK Standard broker type: kafka.t3.small, kafka.m5.* or kafka.m7g.* (large ... 24xlarge)."
  }
}

variable "msk_broker_volume_gb" {
  description = "EBS storage per broker in GiB (provisioned mode)."
  type        = number
  default     = 20

  validation {
    condition     = var.msk_broker_volume_gb >= 1 && var.msk_broker_volume_gb <= 16384
    error_message = "msk_broker_volume_gb must be between 1 and 16384."
  }
}

variable "topic_partitions" {
  description = "Partitions per topic (created by the init task)."
  type        = number
  default     = 3

  validation {
    condition     = var.topic_partitions >= 1 && var.topic_partitions <= 100
    error_message = "topic_partitions must be between 1 and 100."
  }
}

# --- EMR Serverless ----------------------------------------------------------------------------

variable "emr_release_label" {
  description = "EMR Serverless release; emr-spark-8.0.0 runs Spark 4.0.2, the pyspark pinned in pyproject.toml."
  type        = string
  default     = "emr-spark-8.0.0"
}

variable "emr_max_capacity" {
  description = "Upper bound of the application's workers."
  type = object({
    cpu    = string
    memory = string
    disk   = optional(string, "200 GB")
  })
  default = { cpu = "8 vCPU", memory = "32 GB" }
}

variable "emr_idle_timeout_minutes" {
  description = "Minutes without jobs after which the application stops (auto-stop)."
  type        = number
  default     = 15

  validation {
    condition     = var.emr_idle_timeout_minutes >= 1 && var.emr_idle_timeout_minutes <= 10080
    error_message = "emr_idle_timeout_minutes must be between 1 and 10080."
  }
}

# --- DocumentDB --------------------------------------------------------------------------------

variable "docdb_instance_class" {
  description = "DocumentDB instance class."
  type        = string
  default     = "db.t3.medium"
}

variable "docdb_instance_count" {
  description = "DocumentDB instances (1 = no replica)."
  type        = number
  default     = 1

  validation {
    condition     = var.docdb_instance_count >= 1 && var.docdb_instance_count <= 16
    error_message = "docdb_instance_count must be between 1 and 16."
  }
}

variable "docdb_deletion_protection" {
  description = "Protect the DocumentDB cluster from deletion (turn on for prod)."
  type        = bool
  default     = false
}

# --- ECS ---------------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the application image in ECR (make deploy sets the git commit)."
  type        = string
  default     = "latest"
}

variable "service_sizes" {
  description = "CPU units and MiB of memory per Fargate service."
  type = map(object({
    cpu    = number
    memory = number
  }))
  default = {
    api       = { cpu = 256, memory = 512 }
    producer  = { cpu = 256, memory = 512 }
    dashboard = { cpu = 512, memory = 1024 }
  }

  validation {
    condition     = alltrue([for k in ["api", "producer", "dashboard"] : contains(keys(var.service_sizes), k)])
    error_message = "service_sizes needs entries for api, producer and dashboard."
  }
}

variable "dashboard_certificate_arn" {
  description = "ACM certificate for HTTPS on the dashboard's load balancer; null serves HTTP only. Needs dashboard_domain (the name the certificate is for)."
  type        = string
  default     = null

  validation {
    condition     = var.dashboard_certificate_arn == null || var.dashboard_domain != null
    error_message = "with dashboard_certificate_arn, set dashboard_domain: the certificate's name, which users open and the websocket origin names."
  }
}

variable "dashboard_allowed_cidrs" {
  description = "CIDR blocks allowed to reach the dashboard's load balancer (required: no open default; your office or VPN ranges)."
  type        = list(string)

  validation {
    condition     = length(var.dashboard_allowed_cidrs) > 0 && alltrue([for c in var.dashboard_allowed_cidrs : can(cidrnetmask(c))])
    error_message = "dashboard_allowed_cidrs needs at least one valid IPv4 CIDR block, e.g. [\"203.0.113.0/24\"]."
  }
}

variable "dashboard_domain" {
  description = "DNS name users open the dashboard at (a CNAME/alias to the load balancer, matching dashboard_certificate_arn); null = the load balancer's own name."
  type        = string
  default     = null
}

variable "producer_rate" {
  description = "Readings per second the producer sends at most."
  type        = number
  default     = 6
}

variable "log_retention_days" {
  description = "CloudWatch log retention for every log group."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}
