"""subsidence:importps — a PS export from any common processor, as clean points in mm and mm/yr."""

import os

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core.errors import InputError
from ..core.psimport import UNITS, convert, detect, read_delimited
from .base import SubsidenceAlgorithm

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

    def name(self):
        return "importps"

    def displayName(self):
        return self.tr("Import PS points")

    def group(self):
        return self.tr("PS points")

    def groupId(self):
        return "points"

    def tags(self):
        return self.tr("psinsar,ps,egms,sarproz,stamps,mintpy,depsi,sbas,import,displacement,velocity").split(",")

    def shortHelpString(self):
        return self.tr(
            "Reads a PS export and writes points with displacement and velocity, ready for the rest of the "
            "chain. The layout is recognised by its columns: EGMS L2a/L2b and L3 Ortho (EPSG:3035 easting/"
            "northing), SARPROZ CSV, MintPy save_qgis / TRE, StaMPS-Visualizer CSV, TU Delft DePSI, layers "
            "with DYYYYMMDD epoch columns (P-SBAS and others), or a plain table with X_FIELD, Y_FIELD and "
            "VALUE_FIELD (and CRS when the file has none). CSV/TXT files are read directly (delimiter "
            "detected), other files and loaded layers through QGIS.\n"
            "displacement = value at the epoch nearest END_DATE minus value at the epoch nearest START_DATE "
            "(default: last and first epoch; the epochs used are logged); velocity = least-squares slope over "
            "the epochs in between, or the file's velocity column when it has no epochs. Sign as in the source "
            "(negative = away from the satellite); uplift is kept.\n"
            "MIN_COHERENCE drops points below it (coherence column detected). LOS_TO_VERTICAL divides by the "
            "up component of the line of sight (los_up, cosU) or cos(incidence angle). Points at the same "
            "location are merged (mean); rows without coordinates or with missing values are dropped and counted "
            "in the log.\n"
            "Units: the output is in mm (displacement) and mm/yr (velocity). UNITS=auto takes the format's own: "
            "EGMS, SARPROZ, MintPy/TRE and StaMPS-Visualizer mm; DePSI m; generic layers and plain tables do not "
            "say, so mm is assumed with a warning: set UNITS (m, cm or mm) for them."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr("PS export (file or layer)"), [QgsProcessing.TypeVector]
            )
        )
        for key, label in (
            (self.START_DATE, "Start date (empty: first epoch)"),
            (self.END_DATE, "End date (empty: last epoch)"),
        ):
            self.addParameter(
                QgsProcessingParameterDateTime(key, self.tr(label), QgsProcessingParameterDateTime.Date, optional=True)
            )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.UNITS, self.tr("Units of the file's displacements"), list(UNITS), defaultValue=UNITS.index("auto")
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_COHERENCE,
                self.tr("Minimum coherence (0: keep all)"),
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
                maxValue=1.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.LOS_TO_VERTICAL, self.tr("Convert line of sight to vertical"), False)
        )
        for key, label in (
            (self.X_FIELD, "X field (plain tables)"),
            (self.Y_FIELD, "Y field (plain tables)"),
            (self.VALUE_FIELD, "Value field (plain tables: the displacement)"),
        ):
            self.addParameter(
                QgsProcessingParameterField(
                    key, self.tr(label), None, self.INPUT, QgsProcessingParameterField.Any, optional=True
                )
            )
        self.addParameter(
            QgsProcessingParameterCrs(self.CRS, self.tr("CRS of coordinate columns that have none"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("PS points"), QgsProcessing.TypeVectorPoint)
        )

    def processAlgorithm(self, parameters, context, feedback):
        try:
            return self._import(parameters, context, feedback)
        except InputError as error:
            raise QgsProcessingException(str(error)) from error

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
        for note in points.notes:
            if note.startswith("WARNING: "):
                feedback.pushWarning(note[len("WARNING: ") :])
            else:
                feedback.pushInfo(note)
        crs = self._output_crs(fmt, layer_crs, parameters, context)
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
        return {self.OUTPUT: destination}

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
            raise QgsProcessingException(self.tr("The input has no features."))
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
        fields = QgsFields()
        fields.append(QgsField("pid", QVariant.String))
        for name in ("displacement", "velocity", "coherence"):
            fields.append(QgsField(name, QVariant.Double))
        fields.append(QgsField("n_epochs", QVariant.Int))
        fields.append(QgsField("start_date", QVariant.String))
        fields.append(QgsField("end_date", QVariant.String))
        return fields


def _or_null(value):
    return float(value) if value == value else None  # NaN is not equal to itself
