#!/usr/bin/env bash
# `make demo`, second part: the workflow model through qgis_process on the bundled Doñana data.
# Arguments: the qgis_process executable, the output folder. QGIS_PLUGINPATH and PYTHONPATH
# come from the Makefile.
set -euo pipefail
qgis_process=$1
out=$(realpath -m "$2")
data=$(realpath resources/sample_data/donana)
model=$(realpath resources/subsidence_workflow.model3)
# The maps' grid: 25 m cells over the points plus a margin of more than half a patch (22 cells),
# so that no point's patch runs off the drivers.
extent="175000,197000,4121000,4141000 [EPSG:25830]"
mkdir -p "$out"
start=$SECONDS

# Enabling is remembered in the QGIS profile, and qgis_process refuses to do it twice.
if ! "$qgis_process" plugins 2>/dev/null | grep -qx '\* insar_subsidence'; then
    "$qgis_process" plugins enable insar_subsidence
fi

echo "== Set-up check"
"$qgis_process" run subsidence:checksetup > "$out/checksetup.txt"
sed -n '1,/^Results/p' "$out/checksetup.txt" | grep -E '^(OK|MISSING)'

echo
# Global kriging (all 442 points): with points in a few clusters, nearest-neighbour sets jump and
# leave seams in a local kriging's surface.
echo "== Derived input: a DEM kriged from the PS points' own heights (field Topo), 25 m cells"
"$qgis_process" run subsidence:krige -- \
    POINTS="$data/Sentinel_Asc.shp" FIELD=Topo VARIOGRAM_MODEL=0 N_NEIGHBOURS=0 EXTENT="$extent" PIXEL_SIZE=25 \
    OUTPUT="$out/derived_dem_from_ps_topo.tif" OUTPUT_VARIANCE="$out/derived_dem_from_ps_topo_variance.tif" \
    > "$out/derived_dem.txt" 2>&1
grep -E '^N_POINTS|^LOO_RMSE' "$out/derived_dem.txt"

echo
echo "== The workflow model: import, terrain factors, distance to the piezometers, stack, patches,"
echo "   training an ensemble of 5 CNNs, surface, uncertainty, area of applicability, kriging, the hybrid"
echo "   (the CNN plus its kriged residuals), every method evaluated on the held-out points"
echo "   (displacement 2016-01-01 … 2019-12-31, mm)"
# units=2: the sample's displacements are in cm, which its columns do not say (auto would assume mm).
"$qgis_process" run "$model" -- \
    ps_export="$data/Sentinel_Asc.shp" start_date=2016-01-01 end_date=2019-12-31 units=2 los_to_vertical=true \
    dem="$out/derived_dem_from_ps_topo.tif" wells="$data/Piezometros.shp" \
    patch_size=22 epochs=0 batch_size=0 learning_rate=0 ensemble=5 variogram_model=0 n_neighbours=0 \
    importps:ps_points="$out/ps_points.gpkg" stackfactors:stack="$out/driver_stack.tif" \
    exportpatches:dataset="$out/dataset.npz" traincnn:model="$out/cnn_model.onnx" \
    traincnn:training_report="$out/training_report.html" predictsurface:cnn_surface="$out/cnn_surface.tif" \
    predictsurface:cnn_uncertainty="$out/cnn_uncertainty.tif" predictsurface:cnn_applicability="$out/cnn_applicability.tif" \
    krige:kriged_surface="$out/kriged_surface.tif" krige:kriging_variance="$out/kriging_variance.tif" \
    krige:kriging_report="$out/kriging_report.html" krigeresiduals:hybrid_surface="$out/hybrid_surface.tif" \
    krigeresiduals:hybrid_variance="$out/hybrid_variance.tif" evaluate:comparison="$out/comparison.csv" \
    evaluate:evaluation_report="$out/evaluation_report.html" > "$out/workflow.txt" 2>&1
# The log's key lines (qgis_process prints progress dots and numbers before some of them).
grep -oE 'Units: (mm|cm|m)[ ,].*|[0-9]+ rows read, [0-9]+ points written|Written: .*|(train|val|test): RMSE.*|σ: the ensemble.*|Area of applicability: dis.*|[0-9.]+ % of the predicted pixels.*|[0-9]+ points with a value in .displacement.: .*|Executed.*' "$out/workflow.txt"

echo
echo "== Every method on the test points (mm; σ-based columns empty where a method has none)"
/usr/bin/python3 tools/methods_table.py "$out/comparison.csv"
grep -oE 'On these points .*' "$out/workflow.txt" | tail -1

/usr/bin/python3 tools/demo_figure_donana.py "$out"

cat <<MSG

Demo outputs ($((SECONDS - start)) s):
  CNN surface       $out/cnn_surface.tif (mm), its uncertainty cnn_uncertainty.tif (mm)
                    and area of applicability cnn_applicability.tif (DI, 1/0 mask)
  kriged surface    $out/kriged_surface.tif (mm)
  kriging variance  $out/kriging_variance.tif (mm²)
  hybrid surface    $out/hybrid_surface.tif (mm), its variance hybrid_variance.tif (mm²)
  evaluation report $out/evaluation_report.html (and comparison.csv)
  training report   $out/training_report.html; kriging report $out/kriging_report.html
  picture           $out/surfaces.png
  inputs made       $out/derived_dem_from_ps_topo.tif, driver_stack.tif, dataset.npz, cnn_model.onnx, ps_points.gpkg
  logs              $out/checksetup.txt, derived_dem.txt, workflow.txt
MSG
