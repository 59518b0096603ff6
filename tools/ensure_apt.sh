#!/usr/bin/env bash
# Installs Debian/Ubuntu packages when a check fails; explains what to do where it cannot.
# Usage: ensure_apt.sh CHECK WHAT PACKAGE...
#   CHECK: a shell command that succeeds when the software is there; WHAT: its name for messages.
set -euo pipefail

check=$1
what=$2
shift 2
if bash -c "$check" >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "$what is not installed, and this is not a Debian/Ubuntu machine, so make cannot install it." >&2
    echo "Install it with your platform's installer (README: \"Installing\"), then run make again." >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$what is missing. Install it as root, then run make again:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $*" >&2
    exit 1
fi
echo "Installing $what from apt: $*"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
