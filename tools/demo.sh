#!/usr/bin/env bash
# `make demo`: runs the plugin's algorithms through qgis_process on the bundled sample data.
# Arguments: the qgis_process executable, the output folder. QGIS_PLUGINPATH and PYTHONPATH
# come from the Makefile.
set -euo pipefail
qgis_process=$1
out=$2
mkdir -p "$out"

# Enabling is remembered in the QGIS profile, and qgis_process refuses to do it twice.
if ! "$qgis_process" plugins 2>/dev/null | grep -qx '\* insar_subsidence'; then
    "$qgis_process" plugins enable insar_subsidence
fi

echo "== Set-up check"
"$qgis_process" run subsidence:checksetup | tee "$out/checksetup.txt"
echo
echo "Demo outputs are in $out"
