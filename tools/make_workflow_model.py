"""Writes resources/subsidence_workflow.model3, the graphical model that chains the plugin's
algorithms from a PS export, a DEM and a well layer to the CNN surface, the kriged surface and
the evaluation. Run with QGIS's Python (`make workflow-model`); the test suite checks that the
committed file is what this script writes, and runs it.
"""

import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QPointF

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "build" / "pluginpath"))  # the plugin under its package name (make)
from insar_subsidence.core.kriging import MODELS
from insar_subsidence.core.psimport import UNITS

DESTINATION = REPO / "resources" / "subsidence_workflow.model3"
HELP = (
    "The whole chain of InSAR Subsidence Mapper in one run: PS points from an export (Import PS points), "
    "slope, TWI and SPI of the DEM (Terrain factors, MFD routing), the distance to the wells, all on the "
    "DEM's grid (Stack driver rasters), patches around the PS points with a spatial split (Export training "
    "patches), an ensemble of dense CNNs (Train the CNN), its surface over the whole DEM with its calibrated "
    "uncertainty and the area of applicability (Predict the surface), ordinary kriging of the same points onto "
    "the same grid, the hybrid (the CNN's surface plus the kriging of its residuals at the points it did not "
    "train on), and every method compared on the held-out points, with a verdict on which map to use, the "
    "calibration of their uncertainties and maps (Evaluate). The PS displacement is in mm, between the epochs "
    "nearest the start and end dates."
)


def parameter(model, definition, x, y):
    model.addModelParameter(definition, _placed(QgsProcessingModelParameter(definition.name()), x, y))


def child(model, algorithm, child_id, description, x, y, sources, outputs=()):
    """sources: {parameter: [source, …]}; outputs: (model output name, child output, label)."""
    step = _placed(QgsProcessingModelChildAlgorithm(algorithm), x, y)
    step.setChildId(child_id)
    step.setDescription(description)
    for name, values in sources.items():
        step.addParameterSources(name, values)
    declared = {}
    for name, child_output, label in outputs:
        output = QgsProcessingModelOutput(name, label)
        output.setChildId(child_id)
        output.setChildOutputName(child_output)
        output.setDefaultValue("TEMPORARY_OUTPUT")  # so that every output can be left unset
        declared[name] = _placed(output, x + 160, y + 40 + 30 * len(declared))
    step.setModelOutputs(declared)
    model.addChildAlgorithm(step)


def _placed(component, x, y):
    component.setPosition(QPointF(x, y))
    return component


def given(name):
    return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]


def made(child_id, output):
    return [QgsProcessingModelChildParameterSource.fromChildOutput(child_id, output)]


def fixed(value):
    return [QgsProcessingModelChildParameterSource.fromStaticValue(value)]


def build():
    model = QgsProcessingModelAlgorithm("PS points to a subsidence surface", "InSAR Subsidence Mapper", "subsidence")
    model.setHelpContent({"ALG_DESC": HELP})
    parameter(
        model,
        QgsProcessingParameterFeatureSource("ps_export", "PS export (file or layer)", [QgsProcessing.TypeVector]),
        120,
        60,
    )
    date = QgsProcessingParameterDateTime.Date
    parameter(
        model,
        QgsProcessingParameterDateTime("start_date", "Start date (empty: first epoch)", date, optional=True),
        120,
        120,
    )
    parameter(
        model, QgsProcessingParameterDateTime("end_date", "End date (empty: last epoch)", date, optional=True), 120, 180
    )
    parameter(
        model,
        QgsProcessingParameterEnum("units", "Units of the file's displacements", list(UNITS), defaultValue=0),
        120,
        240,
    )
    parameter(
        model, QgsProcessingParameterBoolean("los_to_vertical", "Convert line of sight to vertical", False), 120, 300
    )
    parameter(model, QgsProcessingParameterRasterLayer("dem", "DEM (its grid is the maps' grid)"), 120, 400)
    parameter(
        model,
        QgsProcessingParameterFeatureSource("wells", "Wells (or other features to measure the distance to)"),
        120,
        500,
    )
    integer = QgsProcessingParameterNumber.Integer
    parameter(
        model, QgsProcessingParameterNumber("patch_size", "Patch size (pixels)", integer, 30, minValue=22), 120, 600
    )
    parameter(
        model,
        QgsProcessingParameterNumber("epochs", "Training epochs (0: the adaptive recipe's)", integer, 0, minValue=0),
        120,
        660,
    )
    parameter(
        model,
        QgsProcessingParameterNumber("batch_size", "Training batch size (0: the recipe's)", integer, 0, minValue=0),
        120,
        720,
    )
    rate = QgsProcessingParameterNumber(
        "learning_rate", "Peak learning rate (0: the recipe's)", QgsProcessingParameterNumber.Double, 0.0, minValue=0.0
    )
    parameter(model, rate, 120, 780)
    ensemble = QgsProcessingParameterNumber(
        "ensemble", "CNN ensemble members (their spread is the uncertainty)", integer, 5, minValue=2
    )
    parameter(model, ensemble, 120, 960)
    parameter(
        model,
        QgsProcessingParameterEnum("variogram_model", "Variogram model (kriging)", list(MODELS), defaultValue=0),
        120,
        840,
    )
    neighbours = QgsProcessingParameterNumber(
        "n_neighbours", "Kriging neighbours (0: all points)", integer, 32, minValue=0
    )
    parameter(model, neighbours, 120, 900)

    child(
        model,
        "subsidence:importps",
        "importps",
        "Import PS points",
        420,
        120,
        {
            "INPUT": given("ps_export"),
            "START_DATE": given("start_date"),
            "END_DATE": given("end_date"),
            "UNITS": given("units"),
            "LOS_TO_VERTICAL": given("los_to_vertical"),
        },
        [("ps_points", "OUTPUT", "PS points")],
    )
    child(
        model,
        "subsidence:terrainfactors",
        "terrainfactors",
        "Terrain factors",
        420,
        400,
        {"INPUT": given("dem"), "FLOW_METHOD": fixed(1)},
    )
    child(
        model,
        "subsidence:distance",
        "distance",
        "Distance to the wells",
        420,
        500,
        {"INPUT": given("wells"), "REFERENCE": given("dem")},
    )
    drivers = (
        given("dem")
        + made("terrainfactors", "SLOPE")
        + made("terrainfactors", "TWI")
        + made("terrainfactors", "SPI")
        + made("distance", "OUTPUT")
    )
    child(
        model,
        "subsidence:stackfactors",
        "stackfactors",
        "Stack driver rasters",
        720,
        450,
        {"INPUTS": drivers, "REFERENCE": given("dem")},
        [("stack", "OUTPUT", "Driver stack")],
    )
    child(
        model,
        "subsidence:exportpatches",
        "exportpatches",
        "Export training patches",
        1020,
        250,
        {
            "POINTS": made("importps", "OUTPUT"),
            "FIELD": fixed("displacement"),
            "FACTORS": made("stackfactors", "OUTPUT"),
            "PATCH_SIZE": given("patch_size"),
        },
        [("dataset", "OUTPUT", "Training dataset")],
    )
    child(
        model,
        "subsidence:traincnn",
        "traincnn",
        "Train the CNN",
        1320,
        250,
        {
            "DATASET": made("exportpatches", "OUTPUT"),
            "EPOCHS": given("epochs"),
            "BATCH_SIZE": given("batch_size"),
            "LEARNING_RATE": given("learning_rate"),
            "ENSEMBLE": given("ensemble"),
        },
        [("model", "OUTPUT_MODEL", "CNN model"), ("training_report", "OUTPUT_REPORT", "Training report")],
    )
    child(
        model,
        "subsidence:predictsurface",
        "predictsurface",
        "Predict the surface",
        1620,
        250,
        {"MODEL": made("traincnn", "OUTPUT_MODEL"), "FACTORS": made("stackfactors", "OUTPUT")},
        [
            ("cnn_surface", "OUTPUT", "CNN subsidence surface"),
            ("cnn_uncertainty", "OUTPUT_UNCERTAINTY", "CNN uncertainty"),
            ("cnn_applicability", "OUTPUT_APPLICABILITY", "CNN area of applicability"),
        ],
    )
    child(
        model,
        "subsidence:krige",
        "krige",
        "Ordinary kriging",
        1020,
        600,
        {
            "POINTS": made("importps", "OUTPUT"),
            "FIELD": fixed("displacement"),
            "REFERENCE": made("stackfactors", "OUTPUT"),
            "VARIOGRAM_MODEL": given("variogram_model"),
            "N_NEIGHBOURS": given("n_neighbours"),
        },
        [
            ("kriged_surface", "OUTPUT", "Kriged surface"),
            ("kriging_variance", "OUTPUT_VARIANCE", "Kriging variance"),
            ("kriging_report", "OUTPUT_REPORT", "Kriging report"),
        ],
    )
    child(
        model,
        "subsidence:krigeresiduals",
        "krigeresiduals",
        "Krige the CNN's residuals (hybrid)",
        1920,
        250,
        {
            "SURFACE": made("predictsurface", "OUTPUT"),
            "POINTS": made("importps", "OUTPUT"),
            "FIELD": fixed("displacement"),
            "DATASET": made("exportpatches", "OUTPUT"),
            "VARIOGRAM_MODEL": given("variogram_model"),
            "N_NEIGHBOURS": given("n_neighbours"),
        },
        [
            ("hybrid_surface", "OUTPUT", "Hybrid surface (CNN + kriged residuals)"),
            ("hybrid_variance", "OUTPUT_VARIANCE", "Hybrid variance"),
        ],
    )
    child(
        model,
        "subsidence:evaluate",
        "evaluate",
        "Every method on the held-out points",
        1620,
        450,
        {
            "DATASET": made("exportpatches", "OUTPUT"),
            "MODEL": made("traincnn", "OUTPUT_MODEL"),
            "VARIOGRAM_MODEL": given("variogram_model"),
            "N_NEIGHBOURS": given("n_neighbours"),
            "SURFACE": made("predictsurface", "OUTPUT"),
            "UNCERTAINTY": made("predictsurface", "OUTPUT_UNCERTAINTY"),
            "APPLICABILITY": made("predictsurface", "OUTPUT_APPLICABILITY"),
        },
        [
            ("comparison", "OUTPUT_TABLE", "Comparison table"),
            ("evaluation_report", "OUTPUT_REPORT", "Evaluation report"),
        ],
    )
    return model


def main(destination=DESTINATION):
    application = QgsApplication([], False)
    application.initQgis()
    if not build().toFile(str(destination)):
        sys.exit(f"Cannot write {destination}")
    print(destination)


if __name__ == "__main__":
    main(*sys.argv[1:])
