#!/usr/bin/env bash
# `make demo`, first part: the chain through qgis_process on the bundled Mexico City data (real
# Sentinel-1 InSAR and a real DEM), and every map scored in the gaps against the InSAR velocity.
# Arguments: the qgis_process executable, the output folder. QGIS_PLUGINPATH and PYTHONPATH come
# from the Makefile. ENSEMBLE and EPOCHS (default 5 and 0, the recipe's) make a reduced run.
set -euo pipefail
qgis_process=$1
out=$(realpath -m "$2")
data=$(realpath resources/sample_data/mexico_city)
tools=$(realpath tools)
ensemble=${ENSEMBLE:-5}
epochs=${EPOCHS:-0}
# "PS": the cells whose mean interferometric coherence is at least this (1 574 of 5 898 cells);
# the others are the gaps where the maps are scored.
min_coherence=0.65
mkdir -p "$out"
start=$SECONDS
run() {  # run ALGORITHM LOG PARAMETER=VALUE …: the log kept, the run's key lines shown
    local algorithm=$1 log=$2
    shift 2
    "$qgis_process" run "$algorithm" -- "$@" > "$out/$log" 2>&1 || { tail -20 "$out/$log"; exit 1; }
}

if ! "$qgis_process" plugins 2>/dev/null | grep -qx '\* insar_subsidence'; then
    "$qgis_process" plugins enable insar_subsidence
fi

echo "== Mexico City: import the InSAR cells as points, keeping as PS those with coherence >= $min_coherence"
run subsidence:importps importps.txt INPUT="$data/insar_pixels.csv" X_FIELD=lon Y_FIELD=lat VALUE_FIELD=vel_vert_mmyr \
    CRS=EPSG:4326 UNITS=3 MIN_COHERENCE=$min_coherence OUTPUT="$out/ps_points.gpkg"
grep -oE '[0-9]+ points written; .*' "$out/importps.txt"

echo
echo "== The DEM onto 150 m cells in UTM 14N (EPSG:32614); slope, TWI and SPI (MFD); the stack"
run gdal:warpreproject warp.txt INPUT="$data/dem.tif" TARGET_CRS=EPSG:32614 RESAMPLING=1 TARGET_RESOLUTION=150 \
    OUTPUT="$out/dem_utm.tif"
run subsidence:terrainfactors terrainfactors.txt INPUT="$out/dem_utm.tif" FLOW_METHOD=1 SLOPE="$out/slope.tif" \
    TWI="$out/twi.tif" SPI="$out/spi.tif" ASPECT=TEMPORARY_OUTPUT CATCHMENT=TEMPORARY_OUTPUT
run subsidence:stackfactors stackfactors.txt INPUTS="$out/dem_utm.tif" INPUTS="$out/slope.tif" INPUTS="$out/twi.tif" \
    INPUTS="$out/spi.tif" OUTPUT="$out/driver_stack.tif"
grep -oE '[0-9]+ bands: .*' "$out/stackfactors.txt"

echo
echo "== 9 x 9 patches (1.35 km) around the PS points, split by spatial blocks"
run subsidence:exportpatches exportpatches.txt POINTS="$out/ps_points.gpkg" FIELD=displacement \
    FACTORS="$out/driver_stack.tif" PATCH_SIZE=9 OUTPUT="$out/dataset.npz"
grep -oE 'Written: .*' "$out/exportpatches.txt"

echo
echo "== An ensemble of $ensemble CNNs of the small architecture (the training recipe's defaults)"
run subsidence:traincnn traincnn.txt DATASET="$out/dataset.npz" ARCHITECTURE=2 ENSEMBLE="$ensemble" EPOCHS="$epochs" \
    OUTPUT_MODEL="$out/cnn_model.onnx" OUTPUT_REPORT="$out/training_report.html"
grep -oE '(train|val|test): RMSE.*|σ: the ensemble.*' "$out/traincnn.txt"

echo
echo "== The CNN surface, its uncertainty and area of applicability; ordinary kriging; the hybrid"
run subsidence:predictsurface predictsurface.txt MODEL="$out/cnn_model.onnx" FACTORS="$out/driver_stack.tif" \
    OUTPUT="$out/cnn_surface.tif" OUTPUT_UNCERTAINTY="$out/cnn_uncertainty.tif" OUTPUT_APPLICABILITY="$out/cnn_applicability.tif"
run subsidence:krige krige.txt POINTS="$out/ps_points.gpkg" FIELD=displacement REFERENCE="$out/driver_stack.tif" \
    OUTPUT="$out/kriged_surface.tif" OUTPUT_VARIANCE="$out/kriging_variance.tif" OUTPUT_REPORT="$out/kriging_report.html"
run subsidence:krigeresiduals krigeresiduals.txt SURFACE="$out/cnn_surface.tif" SURFACE_UNCERTAINTY="$out/cnn_uncertainty.tif" \
    POINTS="$out/ps_points.gpkg" FIELD=displacement DATASET="$out/dataset.npz" \
    OUTPUT="$out/hybrid_surface.tif" OUTPUT_VARIANCE="$out/hybrid_variance.tif"
grep -oE '[0-9.]+ % of the predicted pixels.*' "$out/predictsurface.txt" || true

echo
echo "== Every method on the held-out test points (evaluate; mm/yr)"
run subsidence:evaluate evaluate.txt DATASET="$out/dataset.npz" MODEL="$out/cnn_model.onnx" \
    SURFACE="$out/cnn_surface.tif" UNCERTAINTY="$out/cnn_uncertainty.tif" APPLICABILITY="$out/cnn_applicability.tif" \
    OUTPUT_TABLE="$out/comparison.csv" OUTPUT_REPORT="$out/evaluation_report.html"
/usr/bin/python3 "$tools/methods_table.py" "$out/comparison.csv"
grep -oE 'On these points .*' "$out/evaluate.txt" | tail -1

echo
echo "== Every map in the gaps: the cells with an InSAR velocity and no PS point (mm/yr)"
/usr/bin/python3 "$tools/gap_scores.py" "$data/velocity_vert_mmyr_approx.tif" "$out/ps_points.gpkg" displacement \
    "$out/gap_scores.csv" CNN="$out/cnn_surface.tif" "ordinary kriging=$out/kriged_surface.tif" \
    "hybrid=$out/hybrid_surface.tif"

/usr/bin/python3 "$tools/demo_figure_mexico.py" "$out" "$data/velocity_vert_mmyr_approx.tif"

cat <<MSG

Mexico City outputs ($((SECONDS - start)) s), in $out:
  CNN surface       cnn_surface.tif (mm/yr), cnn_uncertainty.tif (σ), cnn_applicability.tif (DI, 1/0 mask)
  kriging           kriged_surface.tif (mm/yr), kriging_variance.tif ((mm/yr)²)
  hybrid            hybrid_surface.tif (mm/yr), hybrid_variance.tif
  scores            gap_scores.csv (in the gaps), comparison.csv and evaluation_report.html (test points)
  reports           training_report.html, kriging_report.html
  picture           surfaces.png
  inputs made       ps_points.gpkg, dem_utm.tif, slope.tif, twi.tif, spi.tif, driver_stack.tif, dataset.npz, cnn_model.onnx
MSG
