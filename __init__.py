"""InSAR Subsidence Mapper: a QGIS Processing plugin (GPL-2.0-or-later)."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import SubsidencePlugin

    return SubsidencePlugin(iface)
