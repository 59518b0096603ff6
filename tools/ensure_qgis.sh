#!/usr/bin/env bash
# Installs QGIS from the distribution when it is missing; explains what to do where it cannot.
# Arguments: the Debian/Ubuntu packages to install.
set -euo pipefail

if command -v qgis_process.bin >/dev/null && /usr/bin/python3 -c 'import qgis.core' 2>/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    cat >&2 <<'MSG'
QGIS (>= 3.22, with its Python bindings) is not installed, and this is not a Debian/Ubuntu
machine, so `make setup` cannot install it. Install QGIS with your platform's installer
(https://qgis.org/download), install the plugin (README: "Installing into your QGIS") and run
its "Check set-up" algorithm: it prints the pip command for QGIS's own Python.
MSG
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "QGIS is missing. Install it as root, then run make again:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $*" >&2
    exit 1
fi
echo "Installing QGIS from apt: $*"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
