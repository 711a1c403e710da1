#!/usr/bin/env bash
# Set up this machine for Loopline from nothing: the Debian packages it needs
# when missing (redis-server, prometheus for promtool, Java 17, Maven), the
# project with its test extras (pip install -e '.[test,demo]'), and the Kafka jars.
# Idempotent: a prepared machine skips apt-get entirely.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Python: the machine's `python` (pyenv); `python3` on a bare Debian image.
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"

# Root runs apt-get directly; anyone else needs sudo.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# System packages, installed only when missing so a prepared machine skips
# apt-get entirely. redis-server backs the online store; prometheus brings
# promtool (used to check alert rules); java + maven run the Kafka broker.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
else
    step "system packages present (redis-server, promtool, java, mvn)"
fi

step "pip install -e '.[test,demo]'"
"$PYTHON" -m pip install -q -e '.[test,demo]'

# The one network-heavy step of the tests, done up front so a slow mirror
# shows up here and not as a test timeout: it fills Maven's cache
# (~/.m2), from which the test stack copies its jars offline.
step "fetch the Kafka jars"
"$PYTHON" -m loopline.cli up --fetch-only
