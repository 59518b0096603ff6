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
echo "== Import the Doñana P-SBAS points: vertical displacement 2016-01-01 … 2019-12-31 (mm)"
"$qgis_process" run subsidence:importps -- \
    INPUT="$points" START_DATE=2016-01-01 END_DATE=2019-12-31 UNITS=2 LOS_TO_VERTICAL=true \
    OUTPUT="$out/ps_points.gpkg" > "$out/importps.txt" 2>&1
grep -E 'Layout|Epochs used|rows read' "$out/importps.txt"

echo
echo "== Ordinary kriging of that displacement onto a 100 m grid"
"$qgis_process" run subsidence:krige -- \
    POINTS="$out/ps_points.gpkg" FIELD=displacement VARIOGRAM_MODEL=2 \
    EXTENT="176000,196000,4122000,4140000 [EPSG:25830]" PIXEL_SIZE=100 \
    OUTPUT="$out/kriged_displacement.tif" OUTPUT_VARIANCE="$out/kriged_displacement_variance.tif" \
    OUTPUT_REPORT="$out/kriging_report.html" > "$out/krige.txt" 2>&1
sed -n '/^Results/,$p' "$out/krige.txt" | grep -E 'VARIOGRAM|LOO_|N_POINTS|FIT_R2'

cat <<MSG

Demo outputs:
  PS points        $out/ps_points.gpkg
  kriged surface   $out/kriged_displacement.tif (mm)
  kriging variance $out/kriged_displacement_variance.tif (mm²)
  kriging report   $out/kriging_report.html
  logs             $out/checksetup.txt, $out/importps.txt, $out/krige.txt
MSG
