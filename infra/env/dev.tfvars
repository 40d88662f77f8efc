environment = "dev"
region      = "us-east-1"

msk_mode                 = "provisioned"
msk_broker_instance_type = "kafka.m7g.large"
docdb_instance_class     = "db.t3.medium"
docdb_instance_count     = 1
emr_max_capacity         = { cpu = "8 vCPU", memory = "32 GB" }
log_retention_days       = 14

# Required, no open default: who may open the dashboard (your office or VPN ranges).
# dashboard_allowed_cidrs = ["203.0.113.0/24"]
# HTTPS: an ACM certificate in this region for the name users open (dashboard_domain).
# dashboard_certificate_arn = "arn:aws:acm:us-east-1:111122223333:certificate/..."
# dashboard_domain          = "water.example.org"
