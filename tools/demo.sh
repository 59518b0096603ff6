#!/usr/bin/env bash
# `make demo`: runs the plugin's algorithms through qgis_process on the bundled sample data.
# Arguments: the qgis_process executable, the output folder. QGIS_PLUGINPATH and PYTHONPATH
# come from the Makefile.
set -euo pipefail
qgis_process=$1
out=$(realpath -m "$2")
points=$(realpath resources/sample_data/donana/Sentinel_Asc.shp)
mkdir -p "$out"

# Enabling is remembered in the QGIS profile, and qgis_process refuses to do it twice.
if ! "$qgis_process" plugins 2>/dev/null | grep -qx '\* insar_subsidence'; then
    "$qgis_process" plugins enable insar_subsidence
fi

echo "== Set-up check"
"$qgis_process" run subsidence:checksetup > "$out/checksetup.txt"
sed -n '1,/^Results/p' "$out/checksetup.txt" | grep -E '^(OK|MISSING)'

echo
echo "== Ordinary kriging of the Doñana P-SBAS velocities (field Vel, cm/yr), 100 m grid"
"$qgis_process" run subsidence:krige -- \
    POINTS="$points" FIELD=Vel VARIOGRAM_MODEL=2 \
    EXTENT="176000,196000,4122000,4140000 [EPSG:25830]" PIXEL_SIZE=100 \
    OUTPUT="$out/kriged_velocity.tif" OUTPUT_VARIANCE="$out/kriged_velocity_variance.tif" \
    OUTPUT_REPORT="$out/kriging_report.html" > "$out/krige.txt" 2>&1
sed -n '/^Results/,$p' "$out/krige.txt" | grep -E 'VARIOGRAM|LOO_|N_POINTS|FIT_R2'

cat <<MSG

Demo outputs:
  kriged surface   $out/kriged_velocity.tif
  kriging variance $out/kriged_velocity_variance.tif
  kriging report   $out/kriging_report.html
  logs             $out/checksetup.txt, $out/krige.txt
MSG
