"""Writes resources/subsidence_workflow.model3, the graphical model that chains the plugin's
algorithms from a PS export, a DEM and a well layer to the CNN surface, the kriged surface and
the evaluation. Run with QGIS's Python (`make workflow-model`); the test suite checks that the
committed file is what this script writes, and runs it.
"""

import os
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
# Written (to temporary files unless named) and loaded on every run: the points, drivers, dataset
# and model later steps or runs need (QGIS 3.22 makes a model output mandatory where the step's
# output is), the maps and the verdict. Every other output is written only when named.
PRIMARY = (
    "importps:ps_points",
    "stackfactors:stack",
    "exportpatches:dataset",
    "traincnn:model",
    "predictsurface:cnn_surface",
    "predictsurface:cnn_uncertainty",
    "krige:kriged_surface",
    "krigeresiduals:hybrid_surface",
    "evaluate:comparison",
)
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


def parameter(model, definition, x, y, help_text):
    definition.setHelp(help_text)
    model.addModelParameter(definition, _placed(QgsProcessingModelParameter(definition.name()), x, y))


def defaults_of(algorithm_id):
    """{parameter: default} of an algorithm's inputs that have a default: the model sets each
    explicitly, because QGIS 3.22's model check reports a parameter left unset as missing."""
    from insar_subsidence.algorithms.provider import ALGORITHMS  # needs QGIS's processing plugin (main)

    name = algorithm_id.split(":")[1]
    [algorithm] = [kind() for kind in ALGORITHMS if kind().name() == name]
    algorithm.initAlgorithm({})
    return {
        definition.name(): definition.defaultValue()
        for definition in algorithm.parameterDefinitions()
        if not definition.isDestination() and definition.defaultValue() is not None
    }


def child(model, algorithm, child_id, description, x, y, sources, outputs=()):
    """sources: {parameter: [source, …]}, every other input at its default; outputs: (model output
    name, child output, label): the PRIMARY ones default to temporary files, the others to none."""
    step = _placed(QgsProcessingModelChildAlgorithm(algorithm), x, y)
    step.setChildId(child_id)
    step.setDescription(description)
    for name, values in {**{key: fixed(value) for key, value in defaults_of(algorithm).items()}, **sources}.items():
        step.addParameterSources(name, values)
    declared = {}
    for name, child_output, label in outputs:
        output = QgsProcessingModelOutput(name, label)
        output.setChildId(child_id)
        output.setChildOutputName(child_output)
        if f"{child_id}:{name}" in PRIMARY:
            output.setDefaultValue("TEMPORARY_OUTPUT")
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
    integer, double, date = (
        QgsProcessingParameterNumber.Integer,
        QgsProcessingParameterNumber.Double,
        QgsProcessingParameterDateTime.Date,
    )
    rate = QgsProcessingParameterNumber(
        "learning_rate", "Peak learning rate (0: the recipe's)", double, 0.0, minValue=0.0
    )
    rate.setMetadata({"widget_wrapper": {"decimals": 5}})
    # In the data's order: the inputs, the dates, how to read the file, the CNN, then kriging.
    inputs = (
        (
            QgsProcessingParameterFeatureSource("ps_export", "PS export (file or layer)", [QgsProcessing.TypeVector]),
            "The PS points as exported by your processor (EGMS, SARPROZ, StaMPS, MintPy, DePSI…), with "
            "one column per acquisition date.",
        ),
        (
            QgsProcessingParameterRasterLayer("dem", "DEM (its grid is the maps' grid)"),
            "The elevation model, in a projected CRS: every map comes out on its grid and extent.",
        ),
        (
            QgsProcessingParameterFeatureSource("wells", "Wells (or other features to measure the distance to)"),
            "Pumping wells, or rivers, faults or any other features whose distance may drive the subsidence.",
        ),
        (
            QgsProcessingParameterDateTime("start_date", "Start date (empty: first epoch)", date, optional=True),
            "The displacement is measured from the acquisition nearest this date.",
        ),
        (
            QgsProcessingParameterDateTime("end_date", "End date (empty: last epoch)", date, optional=True),
            "…to the acquisition nearest this date.",
        ),
        (
            QgsProcessingParameterEnum("units", "Units of the file's displacements", list(UNITS), defaultValue=0),
            "auto guesses from the values and says which unit it assumed in the log; choose the unit your "
            "processor wrote when you know it (the bundled Doñana sample is in cm).",
        ),
        (
            QgsProcessingParameterBoolean("los_to_vertical", "Convert line of sight to vertical", False),
            "Divide the line-of-sight displacement by the up component of the look vector (from the file's "
            "columns), to map vertical subsidence.",
        ),
        (
            QgsProcessingParameterNumber("patch_size", "Patch size (pixels)", integer, 30, minValue=22),
            "The side of the square of driver pixels around each point that the CNN sees (the paper: 30).",
        ),
        (
            QgsProcessingParameterNumber(
                "ensemble", "CNN ensemble members (their spread is the uncertainty)", integer, 5, minValue=2
            ),
            "How many CNNs are trained from different seeds; their mean is the map, their spread its uncertainty.",
        ),
        (
            QgsProcessingParameterNumber(
                "epochs", "Training epochs (0: the adaptive recipe's)", integer, 0, minValue=0
            ),
            "Leave at 0: the adaptive recipe sizes the training to the number of points.",
        ),
        (
            QgsProcessingParameterNumber("batch_size", "Training batch size (0: the recipe's)", integer, 0, minValue=0),
            "Patches per training step; leave at 0 for the recipe's.",
        ),
        (rate, "The largest learning rate of the schedule; leave at 0 for the recipe's."),
        (
            QgsProcessingParameterEnum("variogram_model", "Variogram model (kriging)", list(MODELS), defaultValue=0),
            "The variogram that ordinary kriging and the kriging of the CNN's residuals fit to the points.",
        ),
        (
            QgsProcessingParameterNumber("n_neighbours", "Kriging neighbours (0: all points)", integer, 32, minValue=0),
            "The nearest points each cell is kriged from; 0 uses every point (slow beyond a few thousand).",
        ),
    )
    for row, (definition, help_text) in enumerate(inputs):
        parameter(model, definition, 120, 60 + 60 * row, help_text)
    model.setHelpContent({"ALG_DESC": HELP, **{definition.name(): text for definition, text in inputs}})
    model.setParameterOrder([definition.name() for definition, _ in inputs])

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
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))  # processing
    if not build().toFile(str(destination)):
        sys.exit(f"Cannot write {destination}")
    print(destination)


if __name__ == "__main__":
    main(*sys.argv[1:])
