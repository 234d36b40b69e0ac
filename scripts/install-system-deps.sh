#!/usr/bin/env bash
# System packages the tests use (a real syslog daemon). Idempotent; needs root or sudo.
set -euo pipefail
need=()
command -v rsyslogd >/dev/null 2>&1 || need+=(rsyslog)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
