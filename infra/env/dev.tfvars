environment = "dev"
region      = "us-east-1"

msk_mode                 = "provisioned"
msk_broker_instance_type = "kafka.t3.small"
docdb_instance_class     = "db.t3.medium"
docdb_instance_count     = 1
emr_max_capacity         = { cpu = "8 vCPU", memory = "32 GB" }
log_retention_days       = 14
