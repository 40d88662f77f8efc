# --- ECS Fargate: sensor API (internal), producer, dashboard (behind an ALB), init (one-off) ---

locals {
  image   = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"
  api_dns = "api.${aws_service_discovery_private_dns_namespace.this.name}"

  # Bokeh accepts websocket connections only from pages served at these host:port origins.
  dashboard_https  = var.dashboard_certificate_arn != null
  dashboard_host   = coalesce(var.dashboard_domain, aws_lb.dashboard.dns_name)
  dashboard_origin = "${local.dashboard_host}:${local.dashboard_https ? 443 : 80}"

  kafka_environment = [
    { name = "SP_KAFKA_BOOTSTRAP", value = local.msk_bootstrap },
    { name = "SP_KAFKA_SECURITY_PROTOCOL", value = "SASL_SSL" },
    { name = "SP_KAFKA_SASL_MECHANISM", value = "AWS_MSK_IAM" },
    { name = "SP_RAW_TOPIC", value = local.topics.raw },
    { name = "SP_CLEAN_TOPIC", value = local.topics.clean },
    { name = "SP_INVALID_TOPIC", value = local.topics.invalid },
    { name = "SP_JOB_GROUP", value = local.job_group },
    { name = "SP_TOPIC_PARTITIONS", value = tostring(var.topic_partitions) },
    { name = "SP_TOPIC_REPLICATION", value = tostring(min(var.az_count, 3)) },
    { name = "SP_AWS_REGION", value = var.region },
  ]

  containers = {
    api = {
      command     = ["sensor-pipeline", "api", "--host", "0.0.0.0"]
      port        = 3030
      environment = [{ name = "SP_AWS_REGION", value = var.region }]
      health      = "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:3030/health')\""
    }
    producer = {
      command = ["sensor-pipeline", "produce"]
      port    = null
      environment = concat(local.kafka_environment, [
        { name = "SP_API_URL", value = "http://${local.api_dns}:3030" },
        { name = "SP_PRODUCER_RATE", value = tostring(var.producer_rate) },
      ])
      health = null
    }
    dashboard = {
      command     = ["sensor-pipeline", "dashboard", "--address", "0.0.0.0"]
      port        = 5006
      environment = concat(local.kafka_environment, [{ name = "SP_DASHBOARD_ALLOW_ORIGIN", value = local.dashboard_origin }])
      # Bokeh's metadata route answers once the app is loaded without building a session (a GET of
      # /dashboard would create one, with its once-a-second refresh, per check), as the ALB's check.
      health = "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:5006/dashboard/metadata')\""
    }
    # The one-off init task owns what must exist before the pipeline runs: the topics (MSK) and the
    # store's indexes (DocumentDB; credentials read from the managed secret by ARN at run time).
    init = {
      command = ["sensor-pipeline", "init"]
      port    = null
      environment = concat(local.kafka_environment, [
        { name = "SP_MONGO_URI", value = local.docdb_uri },
        { name = "SP_MONGO_SECRET_ARN", value = local.docdb_secret_arn },
        { name = "SP_MONGO_TLS_CA_FILE", value = "/etc/ssl/certs/rds-global-bundle.pem" },
      ])
      health = null
    }
  }
}

resource "aws_ecs_cluster" "this" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name = "${var.environment}.${var.project}.internal"
  vpc  = local.vpc_id
}

resource "aws_service_discovery_service" "api" {
  name = "api"
  # Instances registered by ECS may still be deregistering when the service is destroyed.
  force_destroy = true
  dns_config {
    namespace_id = aws_service_discovery_private_dns_namespace.this.id
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
}

resource "aws_ecs_task_definition" "this" {
  for_each                 = local.containers
  family                   = "${local.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.key == "init" ? 256 : var.service_sizes[each.key].cpu
  memory                   = each.key == "init" ? 512 : var.service_sizes[each.key].memory
  execution_role_arn       = aws_iam_role.task_execution.arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # No secret values here: Kafka uses the task role through IAM auth, and the init task (like the
  # Spark job) reads the DocumentDB secret by ARN at run time with its task role.
  container_definitions = jsonencode([
    {
      name                   = each.key
      image                  = local.image
      essential              = true
      command                = each.value.command
      environment            = each.value.environment
      readonlyRootFilesystem = true
      user                   = "10001"
      portMappings           = each.value.port == null ? [] : [{ containerPort = each.value.port, protocol = "tcp" }]
      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp" }]
      healthCheck = each.value.health == null ? null : {
        command     = ["CMD-SHELL", each.value.health]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this[each.key].name
          awslogs-region        = var.region
          awslogs-stream-prefix = each.key
        }
      }
    }
  ])

  volume {
    name = "tmp"
  }
}

resource "aws_ecs_service" "this" {
  for_each               = toset(["api", "producer", "dashboard"])
  name                   = each.key
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.this[each.key].arn
  desired_count          = 1
  launch_type            = "FARGATE"
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.workload[each.key].id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # A new dashboard task reads back its history before it answers: the load balancer's and the
  # container's health checks are ignored that long after it starts (CreateService,
  # healthCheckGracePeriodSeconds, https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_CreateService.html).
  health_check_grace_period_seconds = each.key == "dashboard" ? 120 : null

  # CreateService fails while the dashboard's target group has no listener yet.
  depends_on = [aws_lb_listener.http, aws_lb_listener.https]

  dynamic "service_registries" {
    for_each = each.key == "api" ? [aws_service_discovery_service.api.arn] : []
    content {
      registry_arn = service_registries.value
    }
  }

  dynamic "load_balancer" {
    for_each = each.key == "dashboard" ? [aws_lb_target_group.dashboard.arn] : []
    content {
      target_group_arn = load_balancer.value
      container_name   = "dashboard"
      container_port   = 5006
    }
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_from_producer" {
  security_group_id            = aws_security_group.workload["api"].id
  description                  = "Sensor API from the producer"
  referenced_security_group_id = aws_security_group.workload["producer"].id
  from_port                    = 3030
  to_port                      = 3030
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "dashboard_from_alb" {
  security_group_id            = aws_security_group.workload["dashboard"].id
  description                  = "Bokeh server from the load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  from_port                    = 5006
  to_port                      = 5006
  ip_protocol                  = "tcp"
}

# --- the dashboard's Application Load Balancer (Bokeh needs its websocket kept open) ---

resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "Dashboard load balancer"
  vpc_id      = local.vpc_id
}

# HTTP always (with a certificate it only redirects to HTTPS), HTTPS with a certificate.
resource "aws_vpc_security_group_ingress_rule" "alb" {
  for_each          = toset(var.dashboard_allowed_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "Dashboard clients (HTTP)"
  cidr_ipv4         = each.value
  from_port         = 80
  to_port           = 80
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = var.dashboard_certificate_arn == null ? toset([]) : toset(var.dashboard_allowed_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "Dashboard clients (HTTPS)"
  cidr_ipv4         = each.value
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "alb" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the dashboard tasks"
  referenced_security_group_id = aws_security_group.workload["dashboard"].id
  from_port                    = 5006
  to_port                      = 5006
  ip_protocol                  = "tcp"
}

resource "aws_lb" "dashboard" {
  #checkov:skip=CKV_AWS_150:deletion protection is on for prod (enable_deletion_protection = environment == prod)
  #checkov:skip=CKV_AWS_91:access logs need a dedicated ELB log bucket; the dashboard is read-only and holds no user data
  #checkov:skip=CKV2_AWS_28:WAF is optional for a read-only dashboard; restrict clients with dashboard_allowed_cidrs
  name                       = substr("${local.name}-dash", 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = local.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  idle_timeout               = 3600 # Bokeh sessions are long-lived websockets
  drop_invalid_header_fields = true
  enable_deletion_protection = var.environment == "prod"
}

resource "aws_lb_target_group" "dashboard" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the ALB; ALB-to-task traffic stays inside the VPC's private subnets
  name        = substr("${local.name}-dash", 0, 32)
  port        = 5006
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = local.vpc_id

  # Bokeh's per-app metadata route: 200 once the app is loaded, without building a browser session
  # (a GET of /dashboard would create one, with its once-a-second refresh, per probe).
  health_check {
    path    = "/dashboard/metadata"
    matcher = "200"
  }

  # A browser session's websocket must return to the server that holds its document.
  stickiness {
    type            = "lb_cookie"
    enabled         = true
    cookie_duration = 86400
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.dashboard.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = var.dashboard_certificate_arn == null ? "forward" : "redirect"
    target_group_arn = var.dashboard_certificate_arn == null ? aws_lb_target_group.dashboard.arn : null

    dynamic "redirect" {
      for_each = var.dashboard_certificate_arn == null ? [] : [1]
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count             = var.dashboard_certificate_arn == null ? 0 : 1
  load_balancer_arn = aws_lb.dashboard.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.dashboard_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.dashboard.arn
  }
}
