"""The provider's entry under Settings > Options > Processing > Providers."""

from processing.core.ProcessingConfig import ProcessingConfig, Setting

TORCH_PYTHON_SETTING = "SUBSIDENCE_TORCH_PYTHON"
DASK_SCHEDULER_SETTING = "SUBSIDENCE_DASK_SCHEDULER"


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
    ProcessingConfig.addSetting(
        Setting(
            provider.name(),
            DASK_SCHEDULER_SETTING,
            "Dask scheduler for kriging: local:N for N worker processes on this machine, or an address such as "
            "tcp://host:8786 (empty: in this process; needs dask and distributed)",
            "",
        )
    )
    ProcessingConfig.readSettings()


def remove_settings():
    ProcessingConfig.removeSetting(TORCH_PYTHON_SETTING)
    ProcessingConfig.removeSetting(DASK_SCHEDULER_SETTING)


def torch_python_setting():
    return ProcessingConfig.getSetting(TORCH_PYTHON_SETTING) or ""


def dask_scheduler_setting():
    return (ProcessingConfig.getSetting(DASK_SCHEDULER_SETTING) or "").strip()
