"""subsidence:importps — a PS export from any common processor, as clean points in mm and mm/yr."""

import os

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsRectangle,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core.errors import InputError
from ..core.psimport import UNITS, convert, detect, read_delimited
from .base import SubsidenceAlgorithm
from .layers import check_area_of_use, new_fields

PROGRESS_EVERY = 5000  # features between progress reports and cancel checks


class ImportPs(SubsidenceAlgorithm):
    INPUT = "INPUT"
    START_DATE = "START_DATE"
    END_DATE = "END_DATE"
    UNITS = "UNITS"
    MIN_COHERENCE = "MIN_COHERENCE"
    LOS_TO_VERTICAL = "LOS_TO_VERTICAL"
    X_FIELD = "X_FIELD"
    Y_FIELD = "Y_FIELD"
    VALUE_FIELD = "VALUE_FIELD"
    CRS = "CRS"
    OUTPUT = "OUTPUT"
    UNITS_USED = "UNITS_USED"
    GROUP = "inputs"
    HELP_SECTION = "PS import"
    SHORT_DESCRIPTION = (
        "PS export (EGMS, SARPROZ, StaMPS, MintPy, DePSI, P-SBAS, table) → points with displacement and velocity"
    )

    def name(self):
        return "importps"

    def displayName(self):
        return self.tr("Import PS points")

    def tags(self):
        return self.tr("psinsar,ps,egms,sarproz,stamps,mintpy,depsi,sbas,import,displacement,velocity").split(",")

    def shortHelpString(self):
        return self.tr(
            "Reads a PS export and writes one point per location with its displacement and velocity.\n"
            "The layout is recognised by its columns: EGMS L2a/L2b and L3, SARPROZ, MintPy / TRE, "
            "StaMPS-Visualizer, TU Delft DePSI, point layers with DYYYYMMDD epoch columns (P-SBAS and others), or "
            "a plain table whose X, Y and value fields you give under Advanced parameters. Dropped rows and merged "
            "points are counted in the log.\n"
            "Units: displacement in mm, velocity in mm/yr, sign as in the source (negative: away from the "
            "satellite). With units 'auto', EGMS, SARPROZ, MintPy/TRE and StaMPS-Visualizer files are read as mm "
            "and DePSI as m; other layouts do not state their units: mm is assumed with a warning, so set 'Units "
            "of the file's displacements' for them. The unit read is logged and returned as 'Units read from the "
            "file'.\n"
            "Method: displacement between the epochs nearest the start and end dates; velocity the least-squares "
            "slope over the epochs between (or the file's velocity column)."
        )

    def initAlgorithm(self, config=None):
        advanced = QgsProcessingParameterDefinition.FlagAdvanced
        self._add(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr("PS export (file or layer)"), [QgsProcessing.TypeVector]
            ),
            self.tr(
                "A PS export: a CSV or TXT file (read directly, delimiter detected) or any vector file or layer QGIS "
                "opens. Its layout is recognised by the names of its columns."
            ),
        )
        self._add(
            QgsProcessingParameterDateTime(
                self.START_DATE,
                self.tr("Start date (empty: first epoch)"),
                QgsProcessingParameterDateTime.Date,
                optional=True,
            ),
            self.tr(
                "The displacement starts at the epoch nearest this date. Empty: the first epoch. The epochs used "
                "are logged; a file without epoch columns ignores it."
            ),
        )
        self._add(
            QgsProcessingParameterDateTime(
                self.END_DATE,
                self.tr("End date (empty: last epoch)"),
                QgsProcessingParameterDateTime.Date,
                optional=True,
            ),
            self.tr(
                "The displacement ends at the epoch nearest this date. Empty: the last epoch. The epochs used are "
                "logged; a file without epoch columns ignores it."
            ),
        )
        self._add(
            QgsProcessingParameterEnum(
                self.UNITS, self.tr("Units of the file's displacements"), list(UNITS), defaultValue=UNITS.index("auto")
            ),
            self.tr(
                "The unit of the values in the file; the output is always converted to mm and mm/yr. auto: the "
                "format's own (EGMS, SARPROZ, MintPy/TRE, StaMPS-Visualizer: mm; DePSI: m). Generic point layers with "
                "epoch columns and plain tables do not state theirs and auto assumes mm: choose m, cm or mm for them "
                "(the bundled Doñana sample is in cm)."
            ),
        )
        self._add(
            QgsProcessingParameterNumber(
                self.MIN_COHERENCE,
                self.tr("Minimum coherence (0: keep all)"),
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
                maxValue=1.0,
            ),
            self.tr(
                "Points with a coherence below this value (0 to 1) are dropped and counted in the log. The coherence "
                "column is found by its name (temporal_coherence, coherence, COHER, coh_mean …); a value above 0 "
                "needs one. 0 keeps every point."
            ),
            decimals=2,
        )
        self._add(
            QgsProcessingParameterBoolean(self.LOS_TO_VERTICAL, self.tr("Convert line of sight to vertical"), False),
            self.tr(
                "Divides displacement and velocity by the up component of the line of sight (a los_up, cosU or up "
                "column) or by the cosine of the incidence angle, taking the motion to be vertical. Off: the values "
                "stay along the line of sight."
            ),
        )
        fields = (
            (
                self.X_FIELD,
                self.tr("X field (plain tables)"),
                self.tr(
                    "Plain tables only: the column with the points' X (easting or longitude). With the Y field "
                    "given too, the file is read as a plain table, whatever its columns."
                ),
            ),
            (
                self.Y_FIELD,
                self.tr("Y field (plain tables)"),
                self.tr(
                    "Plain tables only: the column with the points' Y (northing or latitude). Give the X field too."
                ),
            ),
            (
                self.VALUE_FIELD,
                self.tr("Value field (plain tables: the displacement)"),
                self.tr(
                    "The column with each point's displacement over the whole period, in the unit chosen above, used "
                    "instead of epoch columns (the velocity is then left empty). Mostly for plain tables."
                ),
            ),
        )
        for key, label, text in fields:
            self._add(
                QgsProcessingParameterField(
                    key, label, None, self.INPUT, QgsProcessingParameterField.Any, optional=True
                ),
                text,
                flags=advanced,
            )
        self._add(
            QgsProcessingParameterCrs(self.CRS, self.tr("CRS of coordinate columns that have none"), optional=True),
            self.tr(
                "The coordinate system of the X and Y columns of a plain table, which a CSV file does not record. "
                "Formats whose coordinates have a known CRS ignore it (EGMS: EPSG:3035; SARPROZ, StaMPS-Visualizer, "
                "DePSI and latitude/longitude columns: WGS 84); for a layer, it replaces the layer's CRS."
            ),
            flags=advanced,
        )
        self._add(
            QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("PS points"), QgsProcessing.TypeVectorPoint),
            self.tr(
                "One point per location (points at the same place are merged, their values averaged) with the fields "
                "pid, displacement (mm), velocity (mm/yr), coherence, n_epochs, start_date and end_date (the epochs "
                "used)."
            ),
        )
        self.addOutput(QgsProcessingOutputString(self.UNITS_USED, self.tr("Units read from the file")))

    def _add(self, parameter, text, decimals=None, flags=0):
        """Adds `parameter` with its help `text` (translated), its decimals and extra flags."""
        parameter.setHelp(text)
        if decimals is not None:
            parameter.setMetadata({"widget_wrapper": {"decimals": decimals}})
        if flags:
            parameter.setFlags(parameter.flags() | flags)
        self.addParameter(parameter)

    def processAlgorithm(self, parameters, context, feedback):
        try:
            return self._import(parameters, context, feedback)
        except InputError as error:  # about the file's columns and rows: the file is named
            name = self._input_name(parameters, context)
            message = str(error) if name in str(error) else f"{name}: {error}"
            raise QgsProcessingException(message) from error

    def _input_name(self, parameters, context):
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        return layer.name() if layer is not None else os.path.basename(str(parameters.get(self.INPUT)))

    def _import(self, parameters, context, feedback):
        table, geometry_xy, layer_crs = self._read(parameters, context, feedback)
        x_field = self.parameterAsString(parameters, self.X_FIELD, context) or None
        y_field = self.parameterAsString(parameters, self.Y_FIELD, context) or None
        value_field = self.parameterAsString(parameters, self.VALUE_FIELD, context) or None
        if value_field and value_field not in table:
            raise QgsProcessingException(self.tr(f"VALUE_FIELD '{value_field}' is not a column of the table."))
        fmt = detect(table.keys(), geometry_xy is not None, x_field, y_field)
        feedback.pushInfo(f"Layout: {fmt.name}; {len(fmt.dates)} epoch columns.")
        points = convert(
            table,
            fmt,
            geometry_xy,
            start=self._date(parameters, self.START_DATE, context),
            end=self._date(parameters, self.END_DATE, context),
            units=UNITS[self.parameterAsEnum(parameters, self.UNITS, context)],
            min_coherence=self.parameterAsDouble(parameters, self.MIN_COHERENCE, context),
            los_to_vertical=self.parameterAsBool(parameters, self.LOS_TO_VERTICAL, context),
            value_field=value_field,
        )
        self._log_units(points, fmt.name, feedback)
        for note in points.notes:
            if note.startswith("WARNING: "):
                feedback.pushWarning(note[len("WARNING: ") :])
            else:
                feedback.pushInfo(note)
        crs = self._output_crs(fmt, layer_crs, parameters, context)
        if len(points.x):
            extent = QgsRectangle(points.x.min(), points.y.min(), points.x.max(), points.y.max())
            check_area_of_use(crs, extent, os.path.basename(str(parameters.get(self.INPUT))))
        feedback.setProgress(50)

        sink, destination = self.parameterAsSink(
            parameters, self.OUTPUT, context, self._fields(), QgsWkbTypes.Point, crs
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for number in range(len(points.x)):
            if number % PROGRESS_EVERY == 0:
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled."))
                feedback.setProgress(50 + 50 * number / len(points.x))
            feature = QgsFeature()
            feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(points.x[number], points.y[number])))
            feature.setAttributes(
                [
                    points.pid[number],
                    _or_null(points.displacement[number]),
                    _or_null(points.velocity[number]),
                    _or_null(points.coherence[number]),
                    points.n_epochs,
                    points.start_date or None,
                    points.end_date or None,
                ]
            )
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        feedback.pushInfo(
            f"{len(next(iter(table.values())))} rows read, {len(points.x)} points written; "
            + ", ".join(f"{count} {reason}" for reason, count in points.dropped.items())
        )
        return {self.OUTPUT: destination, self.UNITS_USED: points.unit}

    def _log_units(self, points, layout, feedback):
        """Which unit the file's displacements were read in, and why, in the log."""
        label = self.tr("Units of the file's displacements")
        if points.unit_from == "declared":
            feedback.pushInfo(self.tr("Units: {}, as set in '{}'.").format(points.unit, label))
        elif points.unit_from:
            feedback.pushInfo(
                self.tr("Units: {}, as {} exports them ('{}' is auto).").format(points.unit, points.unit_from, label)
            )
        else:
            feedback.pushWarning(
                self.tr(
                    "Units: {} assumed, because the {} layout does not state its units. If the file's "
                    "displacements are in cm or m, set '{}' to cm or m and run again: read as mm, they come out 10 "
                    "or 1000 times too small."
                ).format(points.unit, layout, label)
            )

    def _read(self, parameters, context, feedback):
        """The attribute table as {column: values}, the point coordinates (or None) and the CRS."""
        value = parameters.get(self.INPUT)
        if isinstance(value, str) and value.lower().endswith((".csv", ".txt")) and os.path.isfile(value):
            # Read directly: OGR takes a header with numeric names (EGMS dates) for a data row.
            return read_delimited(value), None, None
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        names = source.fields().names()
        columns = {name: [] for name in names}
        xs, ys = [], []
        points = QgsWkbTypes.geometryType(source.wkbType()) == QgsWkbTypes.PointGeometry
        total = max(source.featureCount(), 1)
        for number, feature in enumerate(source.getFeatures()):
            if number % PROGRESS_EVERY == 0:
                if feedback.isCanceled():
                    raise QgsProcessingException(self.tr("Canceled."))
                feedback.setProgress(40 * number / total)
            for name, value in zip(names, feature.attributes()):
                columns[name].append(None if isinstance(value, QVariant) else value)  # NULL is a QVariant
            if points:
                geometry = feature.geometry()
                point = next(geometry.constParts(), None) if not geometry.isEmpty() else None
                xs.append(point.x() if point else float("nan"))
                ys.append(point.y() if point else float("nan"))
        if not xs and not any(columns.values()):
            raise QgsProcessingException(self.tr(f"'{source.sourceName()}' has no features: choose the PS export."))
        geometry_xy = (np.array(xs), np.array(ys)) if points else None
        return columns, geometry_xy, source.sourceCrs()

    def _date(self, parameters, key, context):
        value = self.parameterAsDateTime(parameters, key, context)
        return value.date().toPyDate() if value.isValid() else None

    def _output_crs(self, fmt, layer_crs, parameters, context):
        if fmt.x and fmt.crs:
            return QgsCoordinateReferenceSystem(fmt.crs)
        crs = self.parameterAsCrs(parameters, self.CRS, context)
        if crs.isValid():
            return crs
        if layer_crs is not None and layer_crs.isValid():
            return layer_crs
        raise QgsProcessingException(
            self.tr("The coordinates carry no CRS: set CRS to the coordinate system of the X and Y columns.")
        )

    @staticmethod
    def _fields():
        return new_fields(
            [
                ("pid", "string"),
                *((name, "double") for name in ("displacement", "velocity", "coherence")),
                ("n_epochs", "integer"),
                ("start_date", "string"),
                ("end_date", "string"),
            ]
        )


def _or_null(value):
    return float(value) if value == value else None  # NaN is not equal to itself
