#!/usr/bin/env bash
# make deploy ENV=dev | make destroy ENV=dev | make plan ENV=dev
# Prints each step and stops at the first error with a message saying what to check.
set -Eeuo pipefail
action=${1:?usage: deploy.sh deploy|destroy|plan ENV}
env_name=${2:?usage: deploy.sh deploy|destroy|plan ENV}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cli=.venv/bin/sensor-pipeline
tfvars="infra/env/$env_name.tfvars"
backend="infra/env/$env_name.s3.tfbackend"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }
trap 'fail "step failed (line $LINENO): $BASH_COMMAND"' ERR

[ -f "$tfvars" ] || fail "$tfvars not found: create it (see infra/env/dev.tfvars and infra/README.md)"
command -v terraform >/dev/null || fail "terraform is not installed (>= 1.10 needed)"
eval "$(bash scripts/terraform-env.sh)"
tf() { terraform -chdir=infra "$@"; }

init() {
  if [ "$env_name" = local ]; then
    step "terraform init (local emulator: state in .local-stack/, not in S3)"
    mkdir -p .local-stack
    # An override file swaps the S3 backend for a local one, for this run only.
    printf 'terraform {\n  backend "local" {\n    path = "%s"\n  }\n}\n' "$root/.local-stack/terraform-local.tfstate" \
      > infra/local_backend_override.tf
    trap 'rm -f infra/local_backend_override.tf' EXIT
    tf init -input=false -reconfigure >/dev/null
  else
    [ -f "$backend" ] || fail "$backend not found: it names the S3 state bucket (see infra/README.md)"
    grep -q CHANGE-ME "$backend" && fail "set the state bucket in $backend first (infra/README.md, 'Remote state')"
    step "terraform init (state: $(grep -E '^key' "$backend"))"
    tf init -input=false -reconfigure -backend-config="env/$env_name.s3.tfbackend" >/dev/null
  fi
}

output() { tf output -raw "$1"; }

case "$action" in
  plan)
    init
    if [ "$env_name" = local ]; then
      step "terraform plan against the AWS emulator on 127.0.0.1:4566 (make local-infra-up)"
      export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
      tf plan -input=false -var-file="env/$env_name.tfvars"
    else
      step "terraform plan"
      tf plan -input=false -var-file="env/$env_name.tfvars"
    fi
    ;;
  deploy)
    command -v docker >/dev/null || fail "docker is needed to build the images (docker buildx)"
    command -v aws >/dev/null || fail "the AWS CLI is needed for the ECR login"
    init
    tag=$(git rev-parse --short=12 HEAD)
    step "terraform apply: ECR and the artifacts bucket first"
    tf apply -input=false -auto-approve -var-file="env/$env_name.tfvars" -var "image_tag=$tag" \
      -target=aws_ecr_repository.app -target=aws_s3_bucket.artifacts
    repo=$(output ecr_repository_url); region=$(output region); bucket=$(output artifacts_bucket)
    step "build and push the application image $repo:$tag"
    aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "${repo%%/*}"
    docker buildx build --platform linux/amd64 -f docker/Dockerfile --target app -t "$repo:$tag" --push .
    step "package the Spark job's Python environment for EMR Serverless"
    docker buildx build --platform linux/amd64 -f docker/Dockerfile --target emr-venv-export -o type=local,dest=.local-stack/emr .
    step "upload the job, its venv archive and the Kafka connector jars to s3://$bucket/jobs/"
    SP_AWS_REGION=$region "$cli" emr upload --bucket "$bucket" --archive .local-stack/emr/pyspark_venv.tar.gz
    step "terraform apply: the whole stack (MSK and DocumentDB take 20-30 minutes the first time)"
    tf apply -input=false -auto-approve -var-file="env/$env_name.tfvars" -var "image_tag=$tag"
    step "create topics (one-off init task)"
    cluster=$(output ecs_cluster_name)
    init_json=$(tf output -json init_task)
    python3 - "$init_json" > .local-stack/init-network.json <<'PY'
import json, sys
task = json.loads(sys.argv[1])
print(json.dumps({"awsvpcConfiguration": {"subnets": task["subnets"], "securityGroups": [task["security_group"]], "assignPublicIp": "DISABLED"}}))
PY
    task_def=$(echo "$init_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_definition"])')
    task=$(aws ecs run-task --region "$region" --cluster "$cluster" --launch-type FARGATE --task-definition "$task_def" \
      --network-configuration "file://.local-stack/init-network.json" --query 'tasks[0].taskArn' --output text)
    aws ecs wait tasks-stopped --region "$region" --cluster "$cluster" --tasks "$task"
    code=$(aws ecs describe-tasks --region "$region" --cluster "$cluster" --tasks "$task" --query 'tasks[0].containers[0].exitCode' --output text)
    [ "$code" = 0 ] || fail "the init task exited $code: see CloudWatch log group /sensor-pipeline/$env_name/init"
    step "submit the streaming job run (kept if one is already running)"
    export SP_AWS_REGION=$region SP_KAFKA_BOOTSTRAP=$(output msk_bootstrap_brokers) SP_KAFKA_SECURITY_PROTOCOL=SASL_SSL \
      SP_KAFKA_SASL_MECHANISM=AWS_MSK_IAM SP_MONGO_URI=$(output docdb_uri) SP_MONGO_SECRET_ARN=$(output docdb_secret_arn) \
      SP_MONGO_TLS_CA_FILE=./environment/rds-global-bundle.pem
    app=$(output emr_application_id)
    if "$cli" emr submit --application-id "$app" --bucket "$bucket" --role-arn "$(output emr_job_role_arn)" \
        --log-group "$(output emr_log_group)" 2>.local-stack/submit.err; then :; else
      grep -q "already running" .local-stack/submit.err || fail "$(cat .local-stack/submit.err)"
      echo "kept the running job run"
    fi
    "$cli" emr status --application-id "$app"
    step "done: dashboard at $(output dashboard_url)"
    ;;
  destroy)
    init
    region=$(output region 2>/dev/null || true)
    app=$(output emr_application_id 2>/dev/null || true)
    if [ -n "$app" ]; then
      step "cancel job runs and stop the EMR Serverless application $app"
      SP_AWS_REGION=$region "$cli" emr cancel --application-id "$app"
      aws emr-serverless stop-application --region "$region" --application-id "$app" || true
    fi
    step "terraform destroy"
    tf destroy -input=false -auto-approve -var-file="env/$env_name.tfvars"
    ;;
  *) fail "unknown action $action (deploy, destroy or plan)";;
esac
