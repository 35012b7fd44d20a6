"""soartc: SOARTC / SOART metrics and scaled dot-product attention over image patches.

The numeric core (``patches``, ``transforms``, ``rt``, ``attention``, ``features``,
``unitspace``) is importable without the command-line interface; ``cli`` is a thin Typer layer
over it. For notebooks, the main functions are attributes of the package::

    import soartc_cli as soartc

    table = soartc.features_table(["photos/cats", "photos/dogs"], size=64)  # pooled rows
    image = soartc.load_image("photos/cats/a.png", size=64).pixels         # (1, 64, 64)
    values = soartc.soartc_features(image, patch=16)                        # (C, T, M, N)

They are imported on first use (module ``__getattr__``), so that ``import soartc_cli`` — and the
start-up of the ``soartc`` command — stays cheap.
"""

__version__ = "0.1.0"

#: Public name → (module, attribute).
_EXPORTS: dict[str, tuple[str, str]] = {
    # a path list → feature rows
    "features_table": ("interfaces.api", "features_table"),
    "FeatureTable": ("interfaces.api", "FeatureTable"),
    "SkippedImagesWarning": ("interfaces.api", "SkippedImagesWarning"),
    # images and patches
    "load_image": ("imaging.load", "load_image"),
    "fit_image": ("imaging.load", "fit"),
    "LoadedImage": ("imaging.load", "LoadedImage"),
    "patch_grid": ("core.patches", "patch_grid"),
    "patch_names": ("core.patches", "patch_names"),
    "patch_view": ("core.patches", "patch_view"),
    "to_patches": ("core.patches", "to_patches"),
    "from_patches": ("core.patches", "from_patches"),
    # kernels, transforms, metrics, features
    "KERNELS": ("core.transforms", "KERNELS"),
    "ROTATIONS": ("core.transforms", "ROTATIONS"),
    "TRANSFORM_PRESETS": ("core.transforms", "TRANSFORM_PRESETS"),
    "load_kernels": ("settings.optionfiles", "load_kernels"),
    "merge_kernels": ("core.transforms", "merge_kernels"),
    "parse_transforms": ("core.transforms", "parse_transforms"),
    "METRICS": ("core.metrics", "METRICS"),
    "METRIC_PRESETS": ("core.metrics", "METRIC_PRESETS"),
    "parse_metrics": ("core.metrics", "parse_metrics"),
    "soart_compare": ("core.metrics", "soart_compare"),
    "soartc_features": ("core.features", "soartc_features"),
    "pool_values": ("output.layouts", "pool_values"),
    # attention
    "seed_demo": ("core.attention", "seed_demo"),
    "softmax": ("core.attention", "softmax"),
    "scaled_dot_product": ("core.attention", "scaled_dot_product"),
    "layer_norm": ("core.attention", "layer_norm"),
    "Weights": ("core.attention", "Weights"),
    "random_weights": ("core.attention", "random_weights"),
    "identity_weights": ("core.attention", "identity_weights"),
    "patch_attention": ("core.attention", "patch_attention"),
    "image_attention": ("core.attention", "image_attention"),
    # the unit space (fit / score)
    "UnitSpace": ("core.unitspace", "UnitSpace"),
    "fit_unit_space": ("core.unitspace", "fit_unit_space"),
    "patch_vectors": ("core.unitspace", "patch_vectors"),
    "patch_distances": ("core.unitspace", "patch_distances"),
    "image_scores": ("core.unitspace", "image_scores"),
    "evaluate": ("core.unitspace", "evaluate"),
    "save_model": ("output.modelfile_v1", "save_model"),
    "load_model": ("output.modelfile_v1", "load_model"),
    # settings
    "ImageSettings": ("settings.image", "ImageSettings"),
    "FeatureSettings": ("settings.features", "FeatureSettings"),
    # errors
    "SoartcError": ("errors", "SoartcError"),
    "UsageError": ("errors", "UsageError"),
    "InputError": ("errors", "InputError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (submodules are imported as usual)."""
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    import importlib  # here: not a cost of every start-up

    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
