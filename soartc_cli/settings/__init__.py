"""Every option of every command as one frozen, validated settings object.

Made once — by the command line, the Python API, or from a run record or model read back — and
checked when made, with one error message per mistake. The run record is their serialisation.

- :mod:`~soartc_cli.settings.values`: strict checks of single values;
- :mod:`~soartc_cli.settings.image`: :class:`ImageSettings`;
- :mod:`~soartc_cli.settings.features`: :class:`FeatureSettings`, :class:`AttentionSettings`,
  :class:`DemoSettings`;
- :mod:`~soartc_cli.settings.run`: :class:`InputSettings`, :class:`OutputSettings`,
  :class:`RunSettings`;
- :mod:`~soartc_cli.settings.inspection`: :class:`FitSettings`, :class:`ScoreSettings`;
- :mod:`~soartc_cli.settings.optionfiles`: the files and texts options name (kernels, weights,
  words).
"""
