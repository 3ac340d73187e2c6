#!/usr/bin/env bash
# The main job: set up, make sure the services run, migrate, then the front door and every
# worker with a live demo sale, until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
exec .venv/bin/seckill up --demo "$@"
