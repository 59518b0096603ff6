"""The provider's entry under Settings > Options > Processing > Providers."""

from processing.core.ProcessingConfig import ProcessingConfig, Setting

TORCH_PYTHON_SETTING = "SUBSIDENCE_TORCH_PYTHON"


def add_settings(provider):
    ProcessingConfig.settingIcons[provider.name()] = provider.icon()
    ProcessingConfig.addSetting(
        Setting(
            provider.name(),
            TORCH_PYTHON_SETTING,
            "Python interpreter with torch, for training (the environment variable "
            "SUBSIDENCE_TORCH_PYTHON, when set, takes precedence; empty: discovered)",
            "",
            valuetype=Setting.FILE,
        )
    )
    ProcessingConfig.readSettings()


def remove_settings():
    ProcessingConfig.removeSetting(TORCH_PYTHON_SETTING)


def torch_python_setting():
    return ProcessingConfig.getSetting(TORCH_PYTHON_SETTING) or ""
