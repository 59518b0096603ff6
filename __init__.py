"""InSAR Subsidence Mapper: a QGIS Processing plugin (GPL-2.0-or-later)."""


def classFactory(iface):
    from .plugin import SubsidencePlugin

    return SubsidencePlugin(iface)
