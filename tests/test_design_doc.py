"""docs/DESIGN.md's table of algorithms names exactly the ids, parameters and outputs the code has."""

import re

from conftest import REPO

DESIGN = REPO / "docs" / "DESIGN.md"


def table_rows():
    """{algorithm id: (the names in its parameters column, those in its outputs column, the names in bold)}."""
    rows = {}
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`subsidence:"):
            names = [set(re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)) for cell in cells[1:]]
            rows[cells[0].strip("`")] = (*names, set(re.findall(r"\*\*`([A-Z][A-Z0-9_]*)`\*\*", cells[1])))
    return rows


def test_the_table_names_every_algorithm_parameter_and_output(provider):
    rows = table_rows()
    algorithms = {algorithm.id(): algorithm for algorithm in provider.algorithms()}
    assert set(rows) == set(algorithms)
    for algorithm_id, algorithm in algorithms.items():
        parameters, outputs, bold = rows[algorithm_id]
        inputs = {
            definition.name() for definition in algorithm.parameterDefinitions() if not definition.isDestination()
        }
        results = {definition.name() for definition in algorithm.outputDefinitions()}
        assert parameters == inputs, algorithm_id
        assert outputs == results, algorithm_id
        required = {
            definition.name()
            for definition in algorithm.parameterDefinitions()
            if not definition.isDestination()
            and not definition.flags() & definition.FlagOptional
            and definition.defaultValue() is None
        }
        assert bold == required, algorithm_id
