# --- VPC (created unless var.existing_vpc is given) -------------------------------------------

locals {
  create_vpc         = var.existing_vpc == null
  vpc_id             = local.create_vpc ? aws_vpc.this[0].id : var.existing_vpc.vpc_id
  private_subnet_ids = local.create_vpc ? aws_subnet.private[*].id : var.existing_vpc.private_subnet_ids
  public_subnet_ids  = local.create_vpc ? aws_subnet.public[*].id : var.existing_vpc.public_subnet_ids
  vpc_cidr           = local.create_vpc ? aws_vpc.this[0].cidr_block : data.aws_vpc.existing[0].cidr_block
}

data "aws_vpc" "existing" {
  count = local.create_vpc ? 0 : 1
  id    = var.existing_vpc.vpc_id
}

resource "aws_vpc" "this" {
  count                = local.create_vpc ? 1 : 0
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # interface endpoints and the MSK/DocumentDB names need private DNS
  tags                 = { Name = local.name }
}

# Private subnets: MSK brokers, DocumentDB, EMR Serverless workers and the Fargate tasks.
resource "aws_subnet" "private" {
  count             = local.create_vpc ? var.az_count : 0
  vpc_id            = aws_vpc.this[0].id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  tags              = { Name = "${local.name}-private-${local.azs[count.index]}", Tier = "private" }
}

# Public subnets: only the dashboard's load balancer (and a NAT gateway when enabled).
resource "aws_subnet" "public" {
  count                   = local.create_vpc ? var.az_count : 0
  vpc_id                  = aws_vpc.this[0].id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, 200 + count.index)
  map_public_ip_on_launch = false
  tags                    = { Name = "${local.name}-public-${local.azs[count.index]}", Tier = "public" }
}

resource "aws_internet_gateway" "this" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = { Name = local.name }
}

resource "aws_route_table" "public" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this[0].id
  }
  tags = { Name = "${local.name}-public" }
}

resource "aws_route_table_association" "public" {
  count          = local.create_vpc ? var.az_count : 0
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_route_table" "private" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = { Name = "${local.name}-private" }
}

resource "aws_route_table_association" "private" {
  count          = local.create_vpc ? var.az_count : 0
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}

resource "aws_eip" "nat" {
  count  = local.create_vpc && var.enable_nat_gateway ? 1 : 0
  domain = "vpc"
  tags   = { Name = "${local.name}-nat" }
}

resource "aws_nat_gateway" "this" {
  count         = local.create_vpc && var.enable_nat_gateway ? 1 : 0
  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  tags          = { Name = local.name }
}

resource "aws_route" "private_nat" {
  count                  = local.create_vpc && var.enable_nat_gateway ? 1 : 0
  route_table_id         = aws_route_table.private[0].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

# The default security group of a new VPC allows nothing.
resource "aws_default_security_group" "this" {
  count  = local.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
}

resource "aws_flow_log" "this" {
  count                = local.create_vpc ? 1 : 0
  vpc_id               = aws_vpc.this[0].id
  traffic_type         = "REJECT"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.this["vpc-flow"].arn
  iam_role_arn         = aws_iam_role.flow_logs[0].arn
}

# --- VPC endpoints: private access to AWS APIs without a NAT gateway ----------------------------

resource "aws_vpc_endpoint" "s3" {
  count             = local.create_vpc ? 1 : 0
  vpc_id            = aws_vpc.this[0].id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private[0].id]
  tags              = { Name = "${local.name}-s3" }
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.create_vpc ? toset(["ecr.api", "ecr.dkr", "logs", "secretsmanager", "sts", "kms"]) : toset([])
  vpc_id              = aws_vpc.this[0].id
  service_name        = "com.amazonaws.${var.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = local.private_subnet_ids
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
  tags                = { Name = "${local.name}-${each.key}" }
}

# --- security groups ---------------------------------------------------------------------------

resource "aws_security_group" "endpoints" {
  name        = "${local.name}-endpoints"
  description = "HTTPS to the VPC interface endpoints from inside the VPC"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  security_group_id = aws_security_group.endpoints.id
  description       = "HTTPS from the VPC"
  cidr_ipv4         = local.vpc_cidr
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

# One group per workload; data services admit only these groups.
locals {
  workloads = toset(["emr", "api", "producer", "dashboard", "init"])
}

resource "aws_security_group" "workload" {
  #checkov:skip=CKV2_AWS_5:attached by key from ecs.tf (services) and emr.tf (application); checkov cannot follow for_each keys
  for_each    = local.workloads
  name        = "${local.name}-${each.key}"
  description = "Pipeline workload: ${each.key}"
  vpc_id      = local.vpc_id
}

# Egress: each workload reaches only what it talks to (groups are stateful: answers need no rule). DNS
# to the VPC resolver is not subject to security groups.
locals {
  workload_reaches = {
    emr       = { msk = 9098, docdb = 27017 }
    api       = {}
    producer  = { msk = 9098, api = 3030 }
    dashboard = { msk = 9098 }
    init      = { msk = 9098, docdb = 27017 }
  }
  workload_targets = {
    msk   = aws_security_group.msk.id
    docdb = aws_security_group.docdb.id
    api   = aws_security_group.workload["api"].id
  }
  workload_egress = merge([
    for workload, targets in local.workload_reaches : {
      for target, port in targets : "${workload}-${target}" => { workload = workload, target = target, port = port }
    }
  ]...)
}

resource "aws_vpc_security_group_egress_rule" "workload" {
  for_each                     = local.workload_egress
  security_group_id            = aws_security_group.workload[each.value.workload].id
  description                  = "${each.value.workload} to ${each.value.target}"
  referenced_security_group_id = local.workload_targets[each.value.target]
  from_port                    = each.value.port
  to_port                      = each.value.port
  ip_protocol                  = "tcp"
}

# AWS APIs over HTTPS: the task's own calls, and on Fargate (platform 1.4+) the image pull, secrets
# and logs also leave through the task's network interface. Through the interface endpoints and the
# S3 gateway endpoint (ECR's layers are in S3) when this stack makes the VPC; an existing VPC's
# endpoints or NAT are not known here, so HTTPS goes anywhere there.
resource "aws_vpc_security_group_egress_rule" "workload_endpoints" {
  # Keyed by the workloads' names, known before anything exists (a `terraform import` plans this too).
  for_each                     = local.create_vpc ? local.workloads : toset([])
  security_group_id            = aws_security_group.workload[each.key].id
  description                  = "HTTPS to the VPC interface endpoints"
  referenced_security_group_id = aws_security_group.endpoints.id
  from_port                    = 443
  to_port                      = 443
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "workload_s3" {
  for_each          = local.create_vpc ? local.workloads : toset([])
  security_group_id = aws_security_group.workload[each.key].id
  description       = "HTTPS to S3 through the gateway endpoint"
  prefix_list_id    = aws_vpc_endpoint.s3[0].prefix_list_id
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "workload_https" {
  for_each          = local.create_vpc ? toset([]) : local.workloads
  security_group_id = aws_security_group.workload[each.key].id
  description       = "HTTPS to AWS APIs (the existing VPC's endpoints or NAT)"
  cidr_ipv4         = "0.0.0.0/0"
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_security_group" "msk" {
  name        = "${local.name}-msk"
  description = "MSK brokers: IAM over TLS (9098) from pipeline workloads only"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "msk_iam" {
  for_each                     = toset(["emr", "producer", "dashboard", "init"])
  security_group_id            = aws_security_group.msk.id
  description                  = "Kafka IAM/TLS from ${each.key}"
  referenced_security_group_id = aws_security_group.workload[each.key].id
  from_port                    = 9098
  to_port                      = 9098
  ip_protocol                  = "tcp"
}

resource "aws_security_group" "docdb" {
  name        = "${local.name}-docdb"
  description = "DocumentDB: TLS on 27017 from the Spark job and the init task only"
  vpc_id      = local.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "docdb" {
  # The Spark job writes readings; the init task creates the indexes.
  for_each                     = toset(["emr", "init"])
  security_group_id            = aws_security_group.docdb.id
  description                  = "MongoDB wire protocol (TLS) from ${each.key}"
  referenced_security_group_id = aws_security_group.workload[each.key].id
  from_port                    = 27017
  to_port                      = 27017
  ip_protocol                  = "tcp"
}
