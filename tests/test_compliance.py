"""Every algorithm follows the provider's conventions, so that the toolbox, the modeler and
qgis_process can use it."""

import re

import pytest
from qgis import processing
from qgis.core import QgsApplication


def provider_algorithms():
    # Collected at import time from the provider's explicit list, so each algorithm is one case.
    from insar_subsidence.algorithms.provider import ALGORITHMS

    return [algorithm() for algorithm in ALGORITHMS]


ALGORITHM_IDS = [f"subsidence:{algorithm.name()}" for algorithm in provider_algorithms()]


@pytest.fixture
def algorithm(provider, request):
    return QgsApplication.processingRegistry().algorithmById(request.param)


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_metadata(algorithm):
    assert re.fullmatch(r"[a-z0-9]+", algorithm.name())
    assert algorithm.displayName().strip()
    assert algorithm.group().strip()
    assert re.fullmatch(r"[a-z0-9]+", algorithm.groupId())
    assert algorithm.tags() and all(tag.strip() for tag in algorithm.tags())
    assert not algorithm.icon().isNull()


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_help_says_what_and_units(algorithm):
    text = algorithm.shortHelpString()
    assert len(text) >= 100, "the help should say what the algorithm does"
    assert re.search(r"^Units:", text, re.MULTILINE), "the help needs a line 'Units: ...'"


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_every_result_is_a_declared_output(algorithm, sample_parameters):
    # The modeler can only wire outputs that are declared.
    assert algorithm.id() in sample_parameters, "add this algorithm to sample_parameters in conftest.py"
    results = processing.run(algorithm, sample_parameters[algorithm.id()])
    declared = {output.name() for output in algorithm.outputDefinitions()}
    assert results, "the algorithm returned nothing"
    assert set(results) <= declared, f"undeclared outputs: {set(results) - declared}"
    assert declared <= set(results), f"declared but never returned: {declared - set(results)}"
