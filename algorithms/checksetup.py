"""subsidence:checksetup — reports the Python packages and the torch interpreter the plugin will use."""

from qgis.core import QgsApplication, QgsProcessingOutputString

from ..core.dependencies import PIP_NAMES, import_error, install_command
from ..models.interpreter import find_torch_python
from .base import SubsidenceAlgorithm
from .settings import torch_python_setting


class CheckSetup(SubsidenceAlgorithm):
    TORCH_PYTHON = "TORCH_PYTHON"
    TORCH_VERSION = "TORCH_VERSION"
    MISSING_PACKAGES = "MISSING_PACKAGES"
    REPORT = "REPORT"
    GROUP = "setup"
    HELP_SECTION = "Installing into your QGIS"
    SHORT_DESCRIPTION = "Lists missing Python packages (with the command to install them) and the torch interpreter"

    def name(self):
        return "checksetup"

    def displayName(self):
        return self.tr("Check set-up (packages and torch interpreter)")

    def tags(self):
        return self.tr("install,dependencies,packages,torch,python,interpreter,onnxruntime,scikit-image").split(",")

    def shortHelpString(self):
        return self.tr(
            "Checks that QGIS's Python can import the packages the plugin needs (onnxruntime, onnx, scikit-image) "
            "and finds the Python interpreter with torch that will run the training, with its torch version. "
            "Nothing is installed or changed: for each missing piece the log gives the command that installs it "
            "and the algorithms that need it.\n"
            "The torch interpreter is, in this order: the one named by the plugin's environment variable (see the "
            "Help button), the provider setting (Settings › Options › Processing › Providers › InSAR Subsidence "
            "Mapper › Python interpreter with torch), else the first Python found that can import torch.\n"
            "Units: none; the results are text: the interpreter's path, the torch version, the missing packages "
            "(comma-separated) and the whole report."
        )

    def initAlgorithm(self, config=None):
        self.addOutput(QgsProcessingOutputString(self.TORCH_PYTHON, self.tr("Torch interpreter")))
        self.addOutput(QgsProcessingOutputString(self.TORCH_VERSION, self.tr("Torch version")))
        self.addOutput(QgsProcessingOutputString(self.MISSING_PACKAGES, self.tr("Missing packages")))
        self.addOutput(QgsProcessingOutputString(self.REPORT, self.tr("Report")))

    def processAlgorithm(self, parameters, context, feedback):
        lines = []
        missing = []
        for module, distribution in PIP_NAMES.items():
            problem = import_error(module)
            if problem is None:
                lines.append(f"OK       {distribution}")
                continue
            missing.append(module)
            needed_by = ", ".join(self._algorithms_requiring(module)) or "no algorithm yet"
            lines.append(f"MISSING  {distribution}: {problem} (needed by {needed_by})")
        if missing:
            lines.append(f"Install the missing packages into QGIS's Python with:\n{install_command(missing)}")
        feedback.setProgress(50)

        torch = find_torch_python(torch_python_setting())
        if torch.problem:
            lines.append(f"MISSING  torch: {torch.problem}")
        else:
            lines.append(f"OK       torch {torch.torch_version} in {torch.path} ({torch.source})")

        report = "\n".join(lines)
        for line in lines:
            (feedback.reportError if line.startswith("MISSING") else feedback.pushInfo)(line)
        return {
            self.TORCH_PYTHON: torch.path or "",
            self.TORCH_VERSION: torch.torch_version or "",
            self.MISSING_PACKAGES: ",".join(PIP_NAMES[module] for module in missing),
            self.REPORT: report,
        }

    def _algorithms_requiring(self, module):
        provider = QgsApplication.processingRegistry().providerById("subsidence")
        algorithms = provider.algorithms() if provider else []
        return [algorithm.id() for algorithm in algorithms if module in getattr(algorithm, "REQUIRES", ())]
