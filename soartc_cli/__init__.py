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
    "features_table": ("api", "features_table"),
    "FeatureTable": ("api", "FeatureTable"),
    "SkippedImagesWarning": ("api", "SkippedImagesWarning"),
    # images and patches
    "load_image": ("imageio", "load_image"),
    "fit_image": ("imageio", "fit"),
    "LoadedImage": ("imageio", "LoadedImage"),
    "patch_grid": ("patches", "patch_grid"),
    "patch_names": ("patches", "patch_names"),
    "patch_view": ("patches", "patch_view"),
    "to_patches": ("patches", "to_patches"),
    "from_patches": ("patches", "from_patches"),
    # kernels, transforms, metrics, features
    "KERNELS": ("transforms", "KERNELS"),
    "ROTATIONS": ("transforms", "ROTATIONS"),
    "TRANSFORM_PRESETS": ("transforms", "TRANSFORM_PRESETS"),
    "load_kernels": ("transforms", "load_kernels"),
    "merge_kernels": ("transforms", "merge_kernels"),
    "parse_transforms": ("transforms", "parse_transforms"),
    "METRICS": ("rt", "METRICS"),
    "METRIC_PRESETS": ("rt", "METRIC_PRESETS"),
    "parse_metrics": ("rt", "parse_metrics"),
    "soart_compare": ("rt", "soart_compare"),
    "soartc_features": ("features", "soartc_features"),
    "pool_values": ("layouts", "pool_values"),
    # attention
    "seed_demo": ("attention", "seed_demo"),
    "softmax": ("attention", "softmax"),
    "scaled_dot_product": ("attention", "scaled_dot_product"),
    "layer_norm": ("attention", "layer_norm"),
    "Weights": ("attention", "Weights"),
    "random_weights": ("attention", "random_weights"),
    "identity_weights": ("attention", "identity_weights"),
    "patch_attention": ("attention", "patch_attention"),
    "image_attention": ("attention", "image_attention"),
    # the unit space (fit / score)
    "UnitSpace": ("unitspace", "UnitSpace"),
    "fit_unit_space": ("unitspace", "fit_unit_space"),
    "patch_vectors": ("unitspace", "patch_vectors"),
    "patch_distances": ("unitspace", "patch_distances"),
    "image_scores": ("unitspace", "image_scores"),
    "evaluate": ("unitspace", "evaluate"),
    "save_model": ("unitspace", "save_model"),
    "load_model": ("unitspace", "load_model"),
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
