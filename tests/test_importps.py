"""subsidence:importps: real PS files against a direct computation from their columns, and a
hand-made file for each other format with the real products' column names."""

import csv
import datetime
import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr, osr
from qgis import processing
from qgis.core import QgsProcessingException

REPO = Path(__file__).resolve().parents[1]
DONANA = str(REPO / "resources" / "sample_data" / "donana" / "Sentinel_Asc.shp")
# Every tenth row of a real DePSI export (tests/data/README.md): 250 points, 11 epochs.
DEPSI = REPO / "tests" / "data" / "amsterdam_depsi" / "depsi_points.csv"


@pytest.fixture
def run(plugin, tmp_path, log_feedback):
    """run(**parameters) -> ((points by pid, EPSG code), log text)."""

    def run_importps(**parameters):
        log = log_feedback()
        output = str(tmp_path / "ps.gpkg")
        try:
            processing.run("subsidence:importps", {"OUTPUT": output, **parameters}, feedback=log)
        except QgsProcessingException as error:
            raise QgsProcessingException(f"{error}\n{log.text}") from error
        return read_output(output), log.text

    return run_importps


def projection(epsg):
    """The PROJ string of an EPSG code, without its datum shift."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(epsg))
    return re.sub(r" \+towgs84=\S+", "", srs.ExportToProj4())


def read_output(path):
    source = ogr.Open(path)
    layer = source.GetLayer()
    rows = {}
    for feature in layer:
        point = feature.GetGeometryRef()
        rows[feature.GetField("pid")] = {
            "x": point.GetX(),
            "y": point.GetY(),
            **{
                name: feature.GetField(name)
                for name in ("displacement", "velocity", "coherence", "n_epochs", "start_date", "end_date")
            },
        }
    return rows, layer.GetSpatialRef().GetAuthorityCode(None)


def oracle(dates, series, start, end, scale):
    """Nearest epochs, difference and least-squares slope, done directly (np.polyfit)."""
    ordinals = np.array([d.toordinal() for d in dates])
    i = int(np.argmin(abs(ordinals - start.toordinal())))
    j = int(np.argmin(abs(ordinals - end.toordinal())))
    window = np.asarray(series[i : j + 1], float) * scale
    slope = np.polyfit(ordinals[i : j + 1] - ordinals[i], window, 1)[0] * 365.25
    return window[-1] - window[0], slope, dates[i], dates[j]


def test_donana_matches_a_direct_computation(run, tmp_path):
    (rows, epsg), log = run(INPUT=DONANA, START_DATE="2016-01-01", END_DATE="2019-06-30", UNITS=2, LOS_TO_VERTICAL=True)
    # The shapefile's .prj is ETRS89 / UTM zone 30N: EPSG:25830 for QGIS 3.22 and 3.40, EPSG:11020
    # (ETRS89-NOR / UTM zone 30N, the same projection) for QGIS 3.44.
    assert projection(epsg) == projection(25830)
    source = ogr.Open(DONANA)
    layer = source.GetLayer()
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    date_names = [n for n in names if n.startswith("D20")]
    dates = [datetime.datetime.strptime(n[1:], "%Y%m%d").date() for n in date_names]
    groups = {}
    for feature in layer:
        point = feature.GetGeometryRef().GetGeometryRef(0)
        up = feature.GetField("cosU")
        d, v, first, last = oracle(
            dates,
            [feature.GetField(n) for n in date_names],
            datetime.date(2016, 1, 1),
            datetime.date(2019, 6, 30),
            10.0,
        )
        groups.setdefault((point.GetX(), point.GetY()), []).append((d / up, v / up, feature.GetField("Coer")))
    assert len(rows) == len(groups) == 442 and "131 merged" in log
    by_location = {(r["x"], r["y"]): r for r in rows.values()}
    for location, values in groups.items():
        row = by_location[location]
        expected = np.mean(values, axis=0)
        assert row["displacement"] == pytest.approx(expected[0], rel=1e-9, abs=1e-9)
        assert row["velocity"] == pytest.approx(expected[1], rel=1e-9, abs=1e-9)
        assert row["coherence"] == pytest.approx(expected[2])
        assert (row["start_date"], row["end_date"]) == (first.isoformat(), last.isoformat())
    assert f"Epochs used: {first} … {last}" in log


def test_depsi_matches_a_direct_computation(run, tmp_path):
    (rows, epsg), log = run(INPUT=str(DEPSI))
    assert epsg == "4326" and "TU Delft DePSI" in log and "Units: m" in log
    # The oracle reads the file with the csv module, not with the plugin's reader.
    with open(DEPSI, newline="") as file:
        table = list(csv.DictReader(file))
    date_names = sorted(n for n in table[0] if n.startswith("d_"))
    dates = [datetime.datetime.strptime(n[2:], "%Y%m%d").date() for n in date_names]
    assert len(dates) == 11 and len(rows) == len(table) == 250
    for record in table:
        series = [float(record[n]) for n in date_names]
        d, v, _, _ = oracle(dates, series, dates[0], dates[-1], 1000.0)
        row = rows[record["pnt_id"]]
        assert (row["x"], row["y"]) == (float(record["pnt_lon"]), float(record["pnt_lat"]))
        assert row["displacement"] == pytest.approx(d, abs=1e-9)
        assert row["velocity"] == pytest.approx(v, rel=1e-9, abs=1e-9)
        assert row["coherence"] == pytest.approx(float(record["pnt_enscoh"]))
        assert row["n_epochs"] == 11
        assert (row["start_date"], row["end_date"]) == ("2016-03-27", "2016-07-15")


def test_units_used_says_which_unit_was_read_and_why(plugin, tmp_path, log_feedback):
    """The unit the file was read in is a result and a log line: the format's own where the layout
    states it, mm with a warning naming the setting where it does not, and the declared one."""

    def units(**parameters):
        log = log_feedback()
        output = str(tmp_path / f"ps_{len(list(tmp_path.iterdir()))}.gpkg")
        results = processing.run("subsidence:importps", {"OUTPUT": output, **parameters}, feedback=log)
        return results["UNITS_USED"], read_output(results["OUTPUT"])[0], log.lines

    used, _, lines = units(INPUT=str(DEPSI))  # auto, and DePSI exports metres
    assert (
        used == "m"
        and "Units: m, as TU Delft DePSI exports them ('Units of the file's displacements' is auto)." in lines
    )
    assert not [line for line in lines if line.startswith("WARNING")]

    # The Doñana sample (P-SBAS, D<YYYYMMDD> columns) does not say it is in cm: auto cannot tell.
    used, assumed, lines = units(INPUT=DONANA)
    [warning] = [line for line in lines if line.startswith("WARNING Units:")]
    assert used == "mm" and "mm assumed" in warning and "set 'Units of the file's displacements' to cm or m" in warning

    used, declared, lines = units(INPUT=DONANA, UNITS=2)  # cm
    assert used == "cm" and "Units: cm, as set in 'Units of the file's displacements'." in lines
    assert not [line for line in lines if line.startswith("WARNING")]
    assert set(declared) == set(assumed)
    for pid, point in declared.items():
        assert point["displacement"] == pytest.approx(10 * assumed[pid]["displacement"], rel=1e-12, abs=1e-12)
        assert point["velocity"] == pytest.approx(10 * assumed[pid]["velocity"], rel=1e-12, abs=1e-12)


def write_csv(path, header, rows, delimiter=","):
    path.write_text("\n".join(delimiter.join(map(str, row)) for row in [header, *rows]) + "\n")
    return str(path)


def test_egms_l2a_csv_with_numeric_date_headers(run, tmp_path):
    header = [
        "pid",
        "mp_type",
        "latitude",
        "longitude",
        "easting",
        "northing",
        "height",
        "rmse",
        "temporal_coherence",
        "amplitude_dispersion",
        "incidence_angle",
        "track_angle",
        "los_east",
        "los_north",
        "los_up",
        "mean_velocity",
        "mean_velocity_std",
        "acceleration",
        "20180105",
        "20180117",
        "20180129",
    ]
    rows = [
        [
            "1AbC",
            "PS",
            52.1,
            5.1,
            3950000.0,
            3200000.0,
            10,
            1.2,
            0.9,
            0.2,
            35,
            -10,
            -0.6,
            -0.1,
            0.8,
            -4.0,
            0.3,
            0.0,
            0.0,
            -1.0,
            -2.5,
        ],
        [
            "2XyZ",
            "PS",
            52.2,
            5.2,
            3950500.0,
            3200500.0,
            12,
            1.1,
            0.5,
            0.3,
            35,
            -10,
            -0.6,
            -0.1,
            0.8,
            1.0,
            0.3,
            0.0,
            0.0,
            0.5,
            1.0,
        ],
    ]
    (out, epsg), log = run(
        INPUT=write_csv(tmp_path / "egms.csv", header, rows), MIN_COHERENCE=0.8, LOS_TO_VERTICAL=True
    )
    assert epsg == "3035" and "EGMS L2a/L2b" in log and list(out) == ["1AbC"]
    assert "coherence below 0.8" in log
    point = out["1AbC"]
    assert (point["x"], point["y"]) == (3950000.0, 3200000.0)
    assert point["displacement"] == pytest.approx(-2.5 / 0.8)
    expected_slope = np.polyfit([0, 12, 24], [0.0, -1.0, -2.5], 1)[0] * 365.25 / 0.8
    assert point["velocity"] == pytest.approx(expected_slope)


def test_egms_l3_semicolon_csv(run, tmp_path):
    header = [
        "pid",
        "easting",
        "northing",
        "height",
        "rmse",
        "mean_velocity",
        "mean_velocity_std",
        "20190101",
        "20190107",
    ]
    rows = [["p1", 4000000, 3000000, 5, 1, -3, 0.1, 0.0, -0.7]]
    (out, epsg), log = run(INPUT=write_csv(tmp_path / "l3.csv", header, rows, ";"))
    assert epsg == "3035" and "EGMS L3" in log and out["p1"]["displacement"] == pytest.approx(-0.7)


def test_sarproz_without_epochs_uses_its_velocity_and_cumulative_displacement(run, tmp_path):
    header = [
        "ID",
        "LAT",
        "LON",
        "SVET",
        "LVET",
        "HEIGHT",
        "HEIGHT WRT DEM",
        "SIGMA HEIGHT",
        "VEL",
        "SIGMA VEL",
        "CUMUL.DISP.",
        "COHER",
    ]
    rows = [
        [1, 37.1, -6.5, 100, 200, 30, 2, 0.5, -7.5, 0.4, -30.2, 0.92],
        [2, 37.2, -6.4, 101, 201, 31, 2, 0.5, 2.0, 0.4, 8.0, 0.85],
    ]
    (out, epsg), log = run(INPUT=write_csv(tmp_path / "sarproz.csv", header, rows))
    assert epsg == "4326" and "SARPROZ" in log and "No epoch columns" in log
    assert (out["1"]["velocity"], out["1"]["displacement"], out["1"]["coherence"]) == (-7.5, -30.2, 0.92)
    assert out["2"]["x"] == -6.4 and out["2"]["n_epochs"] == 0


def test_mintpy_save_qgis_shapefile(run, tmp_path):
    path = str(tmp_path / "mintpy.shp")
    source = ogr.GetDriverByName("ESRI Shapefile").CreateDataSource(path)
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    layer = source.CreateLayer("mintpy", wgs84, ogr.wkbPoint)
    for name in ("CODE",):
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    for name in ("HEIGHT", "H_STDEV", "VEL", "V_STDEV", "COHERENCE", "EFF_AREA", "D20150101", "D20150113", "D20150125"):
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTReal))
    feature = ogr.Feature(layer.GetLayerDefn())
    for name, value in zip(
        ("CODE", "HEIGHT", "H_STDEV", "VEL", "V_STDEV", "COHERENCE", "EFF_AREA", "D20150101", "D20150113", "D20150125"),
        ("0001", 12.0, 1.0, -9.0, 0.5, 0.95, 1.0, 0.0, -0.4, -0.9),
    ):
        feature.SetField(name, value)
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (-6.5 37.1)"))
    layer.CreateFeature(feature)
    source = None
    (out, epsg), log = run(INPUT=path, START_DATE="2015-01-10")
    assert "MintPy" in log and epsg == "4326"
    assert out["0001"]["displacement"] == pytest.approx(-0.5)  # D20150125 - D20150113 (nearest 2015-01-10)
    assert out["0001"]["start_date"] == "2015-01-13" and out["0001"]["n_epochs"] == 2


def test_stamps_visualizer_csv_with_its_metadata_row(run, tmp_path):
    # writetable of [lon lat v ts...] with a first row [ref_lon ref_lat NaN day-1] (Matlab day numbers).
    days = [datetime.date(2017, 3, 1), datetime.date(2017, 3, 13), datetime.date(2017, 3, 25)]
    meta = [-6.0, 37.0, "NaN", *[d.toordinal() + 366 - 1 for d in days]]
    rows = [meta, [-6.1, 37.1, -5.0, 0.0, -0.2, -0.4], [-6.2, 37.2, 3.0, 0.0, 0.1, "NaN"]]
    path = write_csv(tmp_path / "stamps.csv", [f"export_res_{i}" for i in range(1, 7)], rows)
    (out, epsg), log = run(INPUT=path)
    assert "StaMPS-Visualizer" in log and epsg == "4326"
    assert len(out) == 1 and "1 missing values (NaN)" in log
    (point,) = out.values()
    assert (point["x"], point["y"], point["displacement"]) == (-6.1, 37.1, pytest.approx(-0.4))
    assert (point["start_date"], point["end_date"]) == ("2017-03-01", "2017-03-25")


def test_plain_table_needs_fields_and_crs(run, tmp_path):
    path = write_csv(
        tmp_path / "plain.csv", ["east", "north", "subsidence_cm"], [[500000, 4100000, -1.5], [500100, 4100100, 0.5]]
    )
    with pytest.raises(QgsProcessingException, match="Columns found: east, north, subsidence_cm"):
        run(INPUT=path)
    common = dict(INPUT=path, X_FIELD="east", Y_FIELD="north", VALUE_FIELD="subsidence_cm")
    with pytest.raises(QgsProcessingException, match="set CRS"):
        run(**common)
    (out, epsg), log = run(CRS="EPSG:25830", UNITS=2, **common)
    assert epsg == "25830" and sorted(p["displacement"] for p in out.values()) == [-15.0, 5.0]
    assert all(p["velocity"] is None for p in out.values())


def test_mexico_city_cells_as_a_plain_table_keep_the_coherent_ones(run):
    """The bundled PyRate cells (id, lon, lat, …, coh_mean): the coherence column is found by its
    name and MIN_COHERENCE keeps exactly the cells the CSV says are at or above it."""
    path = Path(__file__).resolve().parents[1] / "resources" / "sample_data" / "mexico_city" / "insar_pixels.csv"
    table = np.genfromtxt(path, delimiter=",", names=True)
    (out, epsg), log = run(
        INPUT=str(path),
        X_FIELD="lon",
        Y_FIELD="lat",
        VALUE_FIELD="vel_vert_mmyr",
        CRS="EPSG:4326",
        UNITS=3,
        MIN_COHERENCE=0.65,
    )
    kept = table[table["coh_mean"] >= 0.65]
    assert epsg == "4326" and len(out) == len(kept) == 1574
    assert sorted(p["displacement"] for p in out.values()) == pytest.approx(sorted(kept["vel_vert_mmyr"]))
    assert sorted(p["coherence"] for p in out.values()) == pytest.approx(sorted(kept["coh_mean"]))


@pytest.mark.parametrize(
    "header, rows, parameters, message",
    [
        (
            ["pid", "easting", "northing", "mean_velocity", "20180105", "20180117"],
            [["a", 1, 2, 0, 0.0, 1.0]],
            {"START_DATE": "2018-02-01", "END_DATE": "2018-01-01"},
            "must be before END_DATE",
        ),
        (
            ["pid", "easting", "northing", "mean_velocity", "20180105", "20180117"],
            [["a", 1, 2, 0, 0.0, 1.0]],
            {"START_DATE": "2019-01-01"},
            "must be before END_DATE|outside the epochs",
        ),
        (
            ["pid", "easting", "northing", "mean_velocity", "20180105", "20180117"],
            [["a", 1, 2, 0, 0.0, "n/a"]],
            {},
            "non-numeric value 'n/a' in row 1",
        ),
        (["ID", "Lat", "Lon", "Height"], [[1, 37.0, -6.0, 5.0]], {}, "Unrecognised PS layout"),
        (
            ["name", "height", "D20180105", "D20180117"],
            [["a", 5.0, 0.0, 1.0]],
            {},
            "no geometry and no recognised coordinate",
        ),
        (
            ["pid", "easting", "northing", "mean_velocity", "20180105", "20180117"],
            [["a", 1, 2, 0, 0.0, 1.0]],
            {"MIN_COHERENCE": 0.5},
            "no coherence column",
        ),
        (
            ["pid", "easting", "northing", "mean_velocity", "20180105"],
            [["a", 1, 2, 0, 0.0]],
            {},
            "Only one epoch column",
        ),
    ],
)
def test_bad_input_is_a_clear_error(run, tmp_path, header, rows, parameters, message):
    with pytest.raises(QgsProcessingException, match=message):
        run(INPUT=write_csv(tmp_path / "bad.csv", header, rows), **parameters)


def test_empty_file_is_a_clear_error(run, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(QgsProcessingException, match="empty"):
        run(INPUT=str(tmp_path / "empty.csv"))
    (tmp_path / "header.csv").write_text("pid,easting,northing,mean_velocity\n")
    with pytest.raises(QgsProcessingException, match="no rows"):
        run(INPUT=str(tmp_path / "header.csv"))
