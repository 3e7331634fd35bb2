#!/bin/sh
# Register filmrestore with a Prefect server (PREFECT_API_URL): the process work pool, the
# 'gpu' concurrency limit (GPU_SLOTS slots, default 1) and the deployments that run on that
# pool (restore-title, restore-catalog). Idempotent: a second run changes nothing.
# The Docker and Kubernetes variants of deploy/prefect.yaml are deployed only where their pools
# exist (REGISTER_POOLS="docker kubernetes" creates them too).
#
#   PREFECT_API_URL=http://127.0.0.1:4200/api sh deploy/register.sh
set -eu
cd "$(dirname "$0")/.."
PREFECT="${PREFECT:-prefect}"
"$PREFECT" work-pool inspect filmrestore-process >/dev/null 2>&1 \
    || "$PREFECT" work-pool create filmrestore-process --type process
"$PREFECT" gcl inspect gpu >/dev/null 2>&1 || "$PREFECT" gcl create gpu --limit "${GPU_SLOTS:-1}"
names="--name restore-title --name restore-catalog --name separate-title"
for pool in ${REGISTER_POOLS:-}; do
    case "$pool" in
        docker)
            "$PREFECT" work-pool inspect filmrestore-docker >/dev/null 2>&1 \
                || "$PREFECT" work-pool create filmrestore-docker --type docker
            names="$names --name restore-title-docker --name restore-catalog-docker" ;;
        kubernetes)
            "$PREFECT" work-pool inspect filmrestore-k8s >/dev/null 2>&1 \
                || "$PREFECT" work-pool create filmrestore-k8s --type kubernetes \
                       --base-job-template deploy/k8s/base-job-template.json
            names="$names --name restore-title-k8s --name separate-title-k8s-gpu" ;;
        *) echo "register.sh: unknown pool '$pool' (docker, kubernetes)" >&2; exit 2 ;;
    esac
done
# shellcheck disable=SC2086 # $names is a list of options
"$PREFECT" --no-prompt deploy --prefect-file deploy/prefect.yaml $names
echo "register.sh: filmrestore-process pool, gpu limit and deployments ready on ${PREFECT_API_URL:-the configured API}"
