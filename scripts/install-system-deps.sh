#!/usr/bin/env bash
# System packages the tests use: a C compiler (benchmark baselines), rsyslog with its RELP input
# (tests/syslogd.py runs its own rsyslogd on a private socket and loopback ports; the system's syslog
# is never used), PostgreSQL and Redis (the tests run their own servers on free ports).
# Idempotent; needs root or sudo only when something is missing.
set -euo pipefail
need=()
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# rsyslog's RELP input (imrelp) for the RELP transport's tests.
compgen -G '/usr/lib/*/rsyslog/imrelp.so' >/dev/null || [ -e /usr/lib/rsyslog/imrelp.so ] || need+=(rsyslog-relp)
# PostgreSQL's server binaries (initdb, pg_ctl, postgres) for the PostgreSQL store's tests, which
# run their own cluster in a temporary folder.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# Redis, the Celery broker of tests/test_celery.py (tests/redis_server.py runs its own on a free port).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends: the daemon and its modules, no logrotate or service set-up.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# apt may start the system service where an init system runs; the tests need none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rsyslog 2>/dev/null; then
    $sudo systemctl stop rsyslog || true
fi
# Likewise PostgreSQL's system cluster: the tests run their own on a free port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet postgresql 2>/dev/null; then
    $sudo systemctl stop postgresql || true
fi
# Likewise Redis's system service: the tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    $sudo systemctl stop redis-server || true
fi
