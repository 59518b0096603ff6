"""Every algorithm follows the provider's conventions, so that the toolbox, the modeler and
qgis_process can use it."""

import re

import pytest
from conftest import REPO
from qgis import processing
from qgis.core import (
    QgsApplication,
    QgsProcessingDestinationParameter,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
)

from insar_subsidence.algorithms.base import GROUPS, readme_anchor, repository_url

README_ANCHORS = {
    readme_anchor(line.lstrip("#"))
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    if line.startswith("#")
}
# The HTML the help may use; any other "<" must be written &lt; (QGIS renders the help as HTML).
HELP_TAGS = re.compile(r"</?(b|i|p|br|ul|ol|li|code)>")
# Words in capitals that are the domain's terms, also where an output has the same id.
TERMS = {"TWI", "SPI", "CRS", "DEM"}
MAIN_PANEL_MOST = 10  # input parameters shown before Advanced Parameters
HELP_MOST = 1000  # characters of an algorithm's help: a short description, the details per parameter


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
    assert algorithm.groupId() in GROUPS and algorithm.group() == GROUPS[algorithm.groupId()]
    description = algorithm.shortDescription()
    assert description.strip() and "\n" not in description and len(description) <= 120
    assert algorithm.tags() and all(tag.strip() for tag in algorithm.tags())
    assert not algorithm.icon().isNull()


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_help_says_what_and_units(algorithm):
    text = algorithm.shortHelpString()
    assert 100 <= len(text) <= HELP_MOST, "the help should say briefly what the algorithm does"
    assert re.search(r"^Units:", text, re.MULTILINE), "the help needs a line 'Units: ...'"


def bare_ids(text, algorithm):
    """Parameter and output ids (or anything in capitals with an underscore) in `text`: prose names
    what the dialog shows, the labels."""
    ids = {definition.name() for definition in (*algorithm.parameterDefinitions(), *algorithm.outputDefinitions())}
    words = set(re.findall(r"\b[A-Z][A-Z0-9_]*\b", text))
    return sorted(word for word in words if "_" in word or (word in ids and word not in TERMS))


def unescaped_tags(text):
    """What looks like an HTML tag in `text` but is none of HELP_TAGS (QGIS would swallow it)."""
    return [tag for tag in re.findall(r"<[^<>]*>?", text) if not HELP_TAGS.fullmatch(tag)]


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_help_names_labels_not_ids_and_escapes_its_angle_brackets(algorithm):
    texts = {"the help": algorithm.shortHelpString()}
    texts.update({parameter.name(): parameter.help() for parameter in algorithm.parameterDefinitions()})
    for where, text in texts.items():
        assert bare_ids(text, algorithm) == [], f"ids in {where}"
        assert unescaped_tags(text) == [], f"unescaped tags in {where}"


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_help_links_to_the_readme_section(algorithm):
    base, anchor = algorithm.helpUrl().split("#")
    assert base == repository_url() and anchor in README_ANCHORS


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_every_parameter_explains_itself_and_decimals_fit(algorithm):
    for parameter in algorithm.parameterDefinitions():
        assert parameter.help().strip(), f"{parameter.name()} needs setHelp()"
        if isinstance(parameter, QgsProcessingParameterNumber) and parameter.dataType() == parameter.Double:
            decimals = parameter.metadata().get("widget_wrapper", {}).get("decimals")
            assert isinstance(decimals, int), f"{parameter.name()} needs its decimals set"


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_rarely_used_settings_are_advanced_and_one_output_is_required(algorithm):
    parameters = algorithm.parameterDefinitions()
    main_panel = [
        parameter.name()
        for parameter in parameters
        if not isinstance(parameter, QgsProcessingDestinationParameter)
        and not parameter.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    ]
    assert len(main_panel) <= MAIN_PANEL_MOST, main_panel
    required = [
        parameter.name()
        for parameter in parameters
        if isinstance(parameter, QgsProcessingDestinationParameter)
        and not parameter.flags() & QgsProcessingParameterDefinition.FlagOptional
    ]
    assert len(required) <= 1, f"secondary outputs must be optional: {required}"


@pytest.mark.parametrize("algorithm", ALGORITHM_IDS, indirect=True)
def test_every_result_is_a_declared_output(algorithm, sample_parameters):
    # The modeler can only wire outputs that are declared.
    assert algorithm.id() in sample_parameters, "add this algorithm to sample_parameters in conftest.py"
    results = processing.run(algorithm, sample_parameters[algorithm.id()])
    declared = {output.name() for output in algorithm.outputDefinitions()}
    assert results, "the algorithm returned nothing"
    assert set(results) <= declared, f"undeclared outputs: {set(results) - declared}"
    assert declared <= set(results), f"declared but never returned: {declared - set(results)}"
