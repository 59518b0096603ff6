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

    def name(self):
        return "checksetup"

    def displayName(self):
        return self.tr("Check set-up (packages and torch interpreter)")

    def group(self):
        return self.tr("Set-up")

    def groupId(self):
        return "setup"

    def tags(self):
        return self.tr("install,dependencies,packages,torch,python,interpreter,onnxruntime,scikit-image").split(",")

    def shortHelpString(self):
        return self.tr(
            "Checks that QGIS's Python can import the packages the plugin needs (onnxruntime, onnx, "
            "scikit-image) and which Python interpreter with torch will run the training, "
            "with its torch version. Nothing is changed: for each missing piece the log gives the "
            "command that installs it, and which algorithms need it.\n"
            "The torch interpreter is, in this order: the environment variable "
            "SUBSIDENCE_TORCH_PYTHON, the provider setting (Settings > Options > Processing > "
            "Providers > InSAR Subsidence Mapper), else the first Python found with torch.\n"
            "Units: none; the outputs are text (interpreter path, torch version, comma-separated "
            "missing packages, and the whole report)."
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
