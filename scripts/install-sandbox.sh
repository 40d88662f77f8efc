#!/usr/bin/env bash
# Debian's bubblewrap, for the deploy rehearsal (make deploy ENV=local): the emulator's ECS runner runs
# each task's container under bwrap with the user, read-only root and writable volumes its task
# definition and docker/Dockerfile give it (src/sensor_pipeline/emulator/container.py). setpriv
# (util-linux, on every Debian) drops to the container's user.
set -euo pipefail
bash "$(dirname "$0")/apt-ensure.sh" bwrap bubblewrap "the rehearsal's container runtime"
command -v setpriv > /dev/null || bash "$(dirname "$0")/apt-ensure.sh" setpriv util-linux "setpriv"
