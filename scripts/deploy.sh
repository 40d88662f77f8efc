#!/usr/bin/env bash
# make deploy ENV=dev | make destroy ENV=dev | make plan ENV=dev | make bootstrap-state ENV=dev
#
# ENV=local is the rehearsal: the same steps, the same Terraform (every resource), the same job-run
# request and task definitions, against the project's AWS emulator on 127.0.0.1:4566, with the ECS
# tasks and the EMR Serverless job run executed on the local stack (infra/README.md, "Rehearsal").
# Only two steps differ, each marked below: the container image (no Docker engine here: the
# emulator's ECS runner runs the image's commands from the project's venv) and where the EMR archive
# is built (on Amazon Linux 2023 in Docker for AWS; on this machine for the rehearsal, same script).
# Prints each step and stops at the first error with a message saying what to check.
set -Eeuo pipefail
action=${1:?usage: deploy.sh deploy|destroy|plan|bootstrap-state ENV}
env_name=${2:?usage: deploy.sh deploy|destroy|plan|bootstrap-state ENV}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cli=.venv/bin/sensor-pipeline
# SP_INFRA_DIR: another copy of infra/ (the rehearsal's tests deploy mutated copies: a permission removed).
infra=${SP_INFRA_DIR:-infra}
# How long the job run must stay RUNNING after it starts, and how long the rehearsal waits for late
# refusals before it checks: what a deploy proves before it says "deployed". The tests shorten both
# and check the refusals again once readings have flowed through every workload.
stable_seconds=${SP_DEPLOY_STABLE_SECONDS:-45}
settle_seconds=${SP_REHEARSAL_SETTLE_SECONDS:-20}
tfvars="$infra/env/$env_name.tfvars"
backend="$infra/env/$env_name.s3.tfbackend"
rehearsal=.local-stack/rehearsal
step() { printf '\n\033[1m==> %s\033[0m  (%s s)\n' "$*" "$SECONDS"; }
fail() {
  printf '\033[31merror:\033[0m %s\n' "$*" >&2
  # The rehearsal says what the emulator refused on the way (a denied call is often why a step failed).
  if [ "$env_name" = local ] && [ -n "${deploy_started:-}" ] && [ -z "${checked:-}" ]; then
    checked=1
    "$cli" aws rehearsal-check --since "$deploy_started" >/dev/null 2>"$rehearsal/findings.txt" \
      || { echo "what the rehearsal refused so far:" >&2; cat "$rehearsal/findings.txt" >&2; }
  fi
  exit 1
}
trap 'fail "step failed (line $LINENO): $BASH_COMMAND"' ERR
local_env() { [ "$env_name" = local ]; }

[ -f "$tfvars" ] || fail "$tfvars not found: create it (see infra/env/dev.tfvars and infra/README.md)"
# The one required variable without a default, checked before anything is created or planned.
if [ "$env_name" != local ] && ! grep -Eq '^\s*dashboard_allowed_cidrs\s*=' "$tfvars"; then
  fail "set dashboard_allowed_cidrs in $tfvars: who may open the dashboard, e.g. dashboard_allowed_cidrs = [\"203.0.113.0/24\"] (your office or VPN; there is no open default)"
fi
command -v terraform >/dev/null || fail "terraform is not installed (>= 1.10 needed)"
eval "$(bash scripts/terraform-env.sh)"
tf() { terraform -chdir="$infra" "$@"; }
# A variable's value as the tfvars file sets it (a plain "name = value" line), or the default given.
tfvar() { local v; v=$(sed -nE "s/^\s*$1\s*=\s*\"?([^\"#]+)\"?.*/\1/p" "$tfvars" | head -n 1 | xargs); echo "${v:-$2}"; }
output() { tf output -raw "$1"; }

if local_env; then
  # Every AWS call (Terraform, boto3, the CLI) goes to the emulator, with dummy credentials.
  export SP_AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ENDPOINT_URL=http://127.0.0.1:4566 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 SP_AWS_REGION=us-east-1
  export TF_DATA_DIR="$root/$rehearsal/terraform"
  mkdir -p "$rehearsal"
fi

stack_running() {
  # stack status: 0 all up, 4 a service failed or is not ready, 3 the stack is not running (any
  # other code: the command itself failed, which says nothing about the stack: not running).
  local code=0
  "$cli" stack status >/dev/null 2>&1 || code=$?
  [ "$code" -eq 0 ] || [ "$code" -eq 4 ]
}

start_local_stack() {
  # The infra tier only (Kafka, the MongoDB-wire server, the emulator): the pipeline that runs is
  # the one this deploy starts through ECS and EMR.
  bash scripts/install-sandbox.sh
  step "local stack: Kafka, MongoDB-wire server, AWS emulator (not local-up's app tier)"
  if ! stack_running; then touch "$rehearsal/started-stack"; fi
  "$cli" stack up --infra-only --refuse-app-tier | tail -n 2
  # moto keeps its state in memory: Terraform state made against an earlier emulator is stale.
  if [ -f "$rehearsal/terraform.tfstate" ] && ! cmp -s .local-stack/emulator.boot "$rehearsal/emulator.boot"; then
    echo "    the emulator was restarted since the last rehearsal: starting from empty Terraform state"
    rm -f "$rehearsal/terraform.tfstate" "$rehearsal/terraform.tfstate.backup"
  fi
  cp .local-stack/emulator.boot "$rehearsal/emulator.boot"
}

init() {
  if local_env; then
    step "terraform init (state in $rehearsal/, not in S3)"
    # An override file swaps the S3 backend for a local one, for this run only.
    printf 'terraform {\n  backend "local" {\n    path = "%s"\n  }\n}\n' "$root/$rehearsal/terraform.tfstate" \
      > "$infra/local_backend_override.tf"
    trap 'rm -f "$infra/local_backend_override.tf"' EXIT
    tf init -input=false -reconfigure >/dev/null
  else
    [ -f "$backend" ] || fail "$backend not found: run \`make bootstrap-state ENV=$env_name\` first (infra/README.md)"
    grep -q CHANGE-ME "$backend" && fail "$backend still names no bucket: run \`make bootstrap-state ENV=$env_name\`"
    step "terraform init (state: $(grep -E '^key' "$backend"))"
    tf init -input=false -reconfigure -backend-config="env/$env_name.s3.tfbackend" >/dev/null
  fi
}

image_tag() {
  # The commit; a work tree with uncommitted changes gets a tag of its own (ECR tags are immutable).
  local tag; tag=$(git rev-parse --short=12 HEAD)
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    tag="$tag-dirty-$(git diff HEAD | sha256sum | cut -c1-8)"
  fi
  echo "$tag"
}

deploy() {
  deploy_started=$(date +%s)
  local_env && start_local_stack
  if ! local_env; then
    command -v docker >/dev/null || fail "docker (with buildx) is needed to build the images"
    command -v mvn >/dev/null || fail "Maven (and a JDK) are needed to fetch the Spark connector jars for EMR"
  fi
  tag=$(image_tag)  # before init: init may touch tracked files (the lock file) and make the tree dirty
  init
  step "ECS service-linked role"
  "$cli" aws service-linked-role
  step "terraform apply: ECR and the artifacts bucket first"
  tf apply -input=false -auto-approve -var-file="env/$env_name.tfvars" -var "image_tag=$tag" \
    -target=aws_ecr_repository.app -target=aws_s3_bucket.artifacts \
    -target=aws_s3_bucket_server_side_encryption_configuration.artifacts \
    -target=aws_s3_bucket_public_access_block.artifacts -target=aws_s3_bucket_policy.artifacts >/dev/null
  repo=$(output ecr_repository_url); region=$(output region); bucket=$(output artifacts_bucket)
  export SP_AWS_REGION=$region

  step "application image $repo:$tag"
  if "$cli" aws image-exists --repository-url "$repo" --tag "$tag"; then
    echo "    already in ECR: kept (tags are immutable; this commit was pushed before)"
  elif local_env; then
    # Rehearsal: no Docker engine; the ECS runner runs the image's commands from the project's venv.
    "$cli" aws register-image --repository-url "$repo" --tag "$tag" --digest-of "$tag"
    echo "    registered (rehearsal: the ECS runner runs the commands from .venv)"
  else
    password=$("$cli" aws ecr-password)
    echo "$password" | docker login --username AWS --password-stdin "${repo%%/*}"
    docker buildx build --platform linux/amd64 -f docker/Dockerfile --target app -t "$repo:$tag" --push .
  fi

  step "the Spark job's Python environment for EMR Serverless (scripts/build_emr_archive.py)"
  mkdir -p "$rehearsal/emr"
  if "$cli" aws object-exists --bucket "$bucket" --key "jobs/$tag/pyspark_venv.tar.gz"; then
    echo "    jobs/$tag/ is already uploaded: kept (one folder per build, never replaced)"
  elif local_env; then
    # Rehearsal: the same script, run with this machine's Python (AWS: Amazon Linux 2023 in Docker); the CA
    # bundle packed as rds-global-bundle.pem is the local CA, which signed the DocumentDB stand-in's certificate.
    cache=${SP_CACHE:-$HOME/.cache/sensor-pipeline}
    SP_CACHE=$cache UV=$cache/tools/bin/uv UV_CACHE_DIR=$cache/uv \
      .venv/bin/python scripts/build_emr_archive.py --out "$rehearsal/emr/pyspark_venv.tar.gz" \
      --ca-bundle .local-stack/tls/ca.pem
  else
    docker buildx build --platform linux/amd64 -f docker/Dockerfile --target emr-venv-export \
      -o type=local,dest="$rehearsal/emr" .
  fi
  if [ -f "$rehearsal/emr/pyspark_venv.tar.gz" ]; then
    step "upload the job, its archive and the connector jars to s3://$bucket/jobs/$tag/"
    # Under jobs/<tag>/: a running job's files are never replaced under it; a new build is a new run.
    "$cli" emr upload --bucket "$bucket" --archive "$rehearsal/emr/pyspark_venv.tar.gz" --version "$tag" >/dev/null
    rm -f "$rehearsal/emr/pyspark_venv.tar.gz"
  fi

  # DocumentDB makes /aws/docdb/<cluster>/{audit,profiler} itself when it exports logs and nothing made
  # them first: in an account where the cluster ran before this stack managed them, they exist. Adopt
  # them, so that the apply does not fail on an existing group (they then get the stack's key and retention).
  cluster_name="$(tfvar project sensor-pipeline)-$(tfvar environment "$env_name")"
  managed=$(tf state list 2>/dev/null || true)  # not piped into grep -q: its early exit would fail the pipe
  for log in audit profiler; do
    address="aws_cloudwatch_log_group.docdb[\"$log\"]"
    if ! grep -qxF "$address" <<<"$managed" \
        && "$cli" aws log-group-exists --name "/aws/docdb/$cluster_name/$log"; then
      step "adopt the existing log group /aws/docdb/$cluster_name/$log"
      tf import -input=false -var-file="env/$env_name.tfvars" -var "image_tag=$tag" "$address" \
        "/aws/docdb/$cluster_name/$log" >/dev/null
    fi
  done

  step "terraform apply: the whole stack (on AWS, MSK and DocumentDB take 20-30 minutes the first time)"
  tf apply -input=false -auto-approve -no-color -var-file="env/$env_name.tfvars" -var "image_tag=$tag" | grep -E '^Apply complete'
  tf state list | grep -vc '^data\.' | xargs printf '    %s resources in the state\n'

  step "init task: topics and the store's indexes (one-off ECS task)"
  init_json=$(tf output -json init_task)
  field() { .venv/bin/python -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(",".join(v) if isinstance(v, list) else v)' "$init_json" "$1"; }
  "$cli" aws run-task --cluster "$(output ecs_cluster_name)" --task-definition "$(field task_definition)" \
    --subnets "$(field subnets)" --security-group "$(field security_group)" \
    || fail "the init task failed: see CloudWatch log group /sensor-pipeline/$env_name/init"

  step "submit the streaming job run (a run of this build is kept; one of an older build is replaced)"
  # Assigned first, exported after: `export X=$(...)` would hide a failing `terraform output`.
  brokers=$(output msk_bootstrap_brokers); docdb_uri=$(output docdb_uri); secret=$(output docdb_secret_arn)
  export SP_KAFKA_BOOTSTRAP=$brokers SP_KAFKA_SECURITY_PROTOCOL=SASL_SSL SP_KAFKA_SASL_MECHANISM=AWS_MSK_IAM \
    SP_MONGO_URI=$docdb_uri SP_MONGO_SECRET_ARN=$secret SP_MONGO_TLS_CA_FILE=./environment/rds-global-bundle.pem
  app=$(output emr_application_id)
  if "$cli" emr submit --application-id "$app" --bucket "$bucket" --role-arn "$(output emr_job_role_arn)" \
      --log-group "$(output emr_log_group)" --version "$tag" --replace-other-build --wait-running 900 --stable-seconds "$stable_seconds" \
      > "$rehearsal/run-id" 2> "$rehearsal/submit.err"; then
    run_id=$(cat "$rehearsal/run-id")
  else
    grep -q "already running" "$rehearsal/submit.err" || fail "$(cat "$rehearsal/submit.err")"
    echo "    kept the running job run"
    run_id=$(sed -nE 's/.*already running \(([^,)]+).*/\1/p' "$rehearsal/submit.err")
  fi
  "$cli" emr status --application-id "$app" --run-id "$run_id"

  if local_env; then
    step "what AWS would have refused: denied AWS calls and Kafka requests, tasks that failed (since this deploy began)"
    checked=1
    "$cli" aws rehearsal-check --since "$deploy_started" --settle "$settle_seconds" \
      || fail "the rehearsal found what would stop the pipeline on AWS (above): fix infra/ or the workload"
  fi

  step "deployed"
  echo "dashboard:   $(output dashboard_url)"
  echo "job run:     $run_id (application $app)"
  echo "logs:        sensor-pipeline emr logs --application-id $app --run-id $run_id --bucket $bucket"
  if local_env; then
    echo "rehearsal:   the dashboard task listens on http://127.0.0.1:5006/dashboard; processes' logs in .local-stack/logs/ecs-*.log and .local-stack/emr-runs/"
  fi
}

destroy() {
  if local_env && ! stack_running; then
    echo "the local stack is not running: nothing of the rehearsal is left"; rm -rf "$rehearsal"; return
  fi
  init
  resources=$(tf state list 2>/dev/null || true)
  if [ -z "$resources" ]; then
    echo "    no resources in the state"
  else
    app=""; region=""
    if grep -qx 'aws_emrserverless_application.this' <<<"$resources"; then
      app=$(output emr_application_id); region=$(output region)
    fi
    if [ -n "$app" ]; then
      step "cancel the job runs, wait for CANCELLED, stop the EMR Serverless application, wait for STOPPED"
      SP_AWS_REGION=${region:-us-east-1} "$cli" emr shutdown --application-id "$app"
    fi
    step "terraform destroy"
    # Once more if it fails: a deletion can be answered out of order (seen with the emulator: a security
    # group rule revoked while its sibling was, InvalidPermission.NotFound); the second run refreshes the
    # state, drops what is gone and deletes the rest.
    log=$(mktemp)
    if ! tf destroy -input=false -auto-approve -no-color -var-file="env/$env_name.tfvars" >"$log" 2>&1; then
      grep -E -A4 '^(│ )?Error' "$log" >&2 || tail -20 "$log" >&2
      echo "    terraform destroy failed (above): once more"
      tf destroy -input=false -auto-approve -no-color -var-file="env/$env_name.tfvars" >"$log" 2>&1 \
        || { tail -40 "$log" >&2; rm -f "$log"; fail "terraform destroy failed twice"; }
    fi
    grep -E '^Destroy complete' "$log"
    rm -f "$log"
  fi
  if local_env; then
    step "check that nothing of the rehearsal is left (emulator resources, local processes)"
    "$cli" aws leftovers --name "sensor-pipeline-$env_name" --processes
    if [ -f "$rehearsal/started-stack" ]; then
      step "stop the local stack the rehearsal started"
      "$cli" stack down
    fi
    rm -rf "$rehearsal"
  fi
}

case "$action" in
  plan)
    local_env && start_local_stack
    init
    step "terraform plan"
    tf plan -input=false -var-file="env/$env_name.tfvars"
    ;;
  bootstrap-state)
    local_env && fail "ENV=local keeps its state in .local-stack/: no bucket to bootstrap"
    step "Terraform state bucket and $backend"
    region=$(sed -nE 's/^\s*region\s*=\s*"([^"]+)".*/\1/p' "$tfvars" | head -n 1)
    SP_AWS_REGION=${region:-us-east-1} "$cli" aws bootstrap-state --env "$env_name"
    ;;
  deploy) deploy ;;
  destroy) destroy ;;
  *) fail "unknown action $action (deploy, destroy, plan or bootstrap-state)";;
esac
