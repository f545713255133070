#!/usr/bin/env bash
# A shell tool: heartbeats and an approval with the `toolwarden beat` / `toolwarden ask` commands.
#
#   toolwarden run -- bash examples/tools/shell_ask.sh
#   toolwarden approve RUN/deploy-prod --response '{"version": "1.4.2"}'
set -euo pipefail

for step in 1 2 3; do
    sleep 1                                   # the real work
    toolwarden beat --progress "0.$((step * 3))" --message "build step ${step}/3"
done

# Exit status: 0 approved, 1 rejected, 2 expired, 3 cancelled, 4 error.
if response=$(toolwarden ask "Deploy build to prod?" --key deploy-prod \
        --details '{"target": "prod"}' --timeout 2h --on-expiry reject); then
    echo "deploying; response: ${response}"
    toolwarden beat --progress 1 --message "deployed"
else
    status=$?
    echo "not deploying (ask exited ${status})" >&2
    exit 1
fi
