"""TOML presets shipped with edgessm: ``quant/`` (quantization specs, ``--spec NAME``) and
``crossbar/`` (crossbar devices, ``--device NAME``); see :mod:`edgessm.resources`."""
