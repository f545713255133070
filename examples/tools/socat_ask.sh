#!/usr/bin/env bash
# The protocol from a shell with socat and no toolwarden install: a heartbeat, one request,
# then read replies until the decision. socat runs as a coprocess so the connection stays open
# while we wait (possibly for days).
#
#   toolwarden run -- bash examples/tools/socat_ask.sh
set -euo pipefail
: "${TOOLWARDEN_SOCKET:?not supervised}"

coproc SUPERVISOR { socat - "UNIX-CONNECT:${TOOLWARDEN_SOCKET}"; }
send() { printf '%s\n' "$1" >&"${SUPERVISOR[1]}"; }

send '{"v":1,"type":"heartbeat","progress":0.5,"message":"about to ask"}'
send '{"v":1,"type":"approval_request","id":"s1","key":"socat-example","summary":"Continue?","timeout":3600}'

status=4
while IFS= read -r line <&"${SUPERVISOR[0]}"; do
    echo "reply: ${line}"
    case "${line}" in
        *'"type":"decision"'*)
            case "${line}" in *'"approved":true'*) status=0 ;; *) status=1 ;; esac
            break ;;
        *'"type":"error"'*) break ;;
    esac
done
kill "${SUPERVISOR_PID}" 2>/dev/null || true
exit "${status}"
