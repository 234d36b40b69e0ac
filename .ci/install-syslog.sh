#!/bin/sh
# Installs rsyslog for the syslog tests (tests/syslogd.py runs its own rsyslogd on a private
# socket and loopback ports; the system's syslog is never used). Idempotent.
set -eu
if command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: no logrotate or service set-up, only the daemon and its modules.
$SUDO apt-get install -y -qq --no-install-recommends rsyslog
# apt may start the system service where an init system runs; the tests need none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rsyslog 2>/dev/null; then
    $SUDO systemctl stop rsyslog || true
fi
