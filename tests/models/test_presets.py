"""The presets are timm models: registered with ``register_model``, built by ``timm.create_model``
after ``import svite_search``, with default configs, and keyword arguments passed through."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from timm.data import resolve_model_data_config

import svite_search.models as models
from svite_search.config import ModelConfig
from svite_search.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[2] / "svite_search"

#: Each preset as the arguments that built it from ``vit_tiny_patch16_224`` before it was a
#: registered model: the registered build must draw the very same weights.
AS_VIT_TINY = {
    "vit_digits": dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
    "vit_digits_small": dict(img_size=8, patch_size=2, in_chans=1, embed_dim=96, depth=6, num_heads=6, mlp_ratio=4.0),
    "vit_micro": dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
}


def _fresh_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_timm_builds_a_preset_by_name_after_importing_the_package() -> None:
    """Importing the package imports nothing heavy, a probe for timm neither; timm's import
    registers the presets and leaves timm its own loader."""
    out = _fresh_python(
        """
        import importlib.util, sys
        import svite_search
        assert importlib.util.find_spec("timm") is not None
        assert not {"torch", "torchvision", "timm"} & set(sys.modules), sys.modules.keys()
        import timm
        assert type(timm.__loader__).__name__ == type(timm.__spec__.loader).__name__ != "_RegisteringLoader"
        model = timm.create_model("vit_digits")
        print(type(model).__name__, model.patch_embed.proj.in_channels, tuple(model.patch_embed.img_size),
              model.num_classes, len(model.blocks), model.embed_dim, sorted(timm.list_models("vit_digits*")))
        """
    )
    assert out == "VisionTransformer 1 (8, 8) 10 4 64 ['vit_digits', 'vit_digits_small']"


def test_timm_imported_before_the_package_gets_the_presets_too() -> None:
    out = _fresh_python(
        f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("guard", {str(PACKAGE / "_torchvision_guard.py")!r})
        guard = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(guard)
        guard.ensure_torchvision()
        import timm
        before = timm.is_model("vit_micro")
        import svite_search
        print(before, timm.is_model("vit_micro"), timm.create_model("vit_micro").patch_embed.num_patches)
        """
    )
    assert out == "False True 16"


@pytest.mark.parametrize("name", sorted(AS_VIT_TINY))
def test_a_registered_preset_draws_the_weights_of_its_vit_tiny_build(name: str) -> None:
    torch.manual_seed(7)
    registered = timm.create_model(name, num_classes=10)
    torch.manual_seed(7)
    before = timm.create_model("vit_tiny_patch16_224", num_classes=10, **AS_VIT_TINY[name])
    assert list(registered.state_dict()) == list(before.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(registered.state_dict().values(), before.state_dict().values()))


def test_default_configs_describe_the_input_and_the_data() -> None:
    digits = timm.create_model("vit_digits")
    assert digits.pretrained_cfg["architecture"] == "vit_digits"
    config = resolve_model_data_config(digits)
    assert config["input_size"] == (1, 8, 8) and config["mean"] == (0.3051,) and config["std"] == (0.3781,)
    micro = timm.create_model("vit_micro")
    assert resolve_model_data_config(micro)["input_size"] == (3, 32, 32) and micro.num_classes == 1000
    assert timm.create_model("vit_digits_small").num_classes == 10


def test_keyword_arguments_override_the_preset() -> None:
    model = timm.create_model("vit_digits", depth=2, num_classes=3, in_chans=3, img_size=16, drop_path_rate=0.1)
    assert len(model.blocks) == 2 and model.num_classes == 3
    assert model.patch_embed.proj.in_channels == 3 and model.patch_embed.num_patches == 64
    assert model.embed_dim == 64  # the preset's own where not overridden
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_pretrained_loads_own_weights_and_without_any_is_refused(tmp_path: Path) -> None:
    trained = timm.create_model("vit_digits")
    torch.save(trained.state_dict(), tmp_path / "weights.pth")
    loaded = timm.create_model("vit_digits", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "weights.pth")))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model("vit_digits", pretrained=True)  # not a silent random initialisation
    with pytest.raises(ConfigError, match="model: cannot build 'vit_digits'"):
        models.build_model(ModelConfig(name="vit_digits", pretrained=True), num_classes=10, in_chans=1)


def test_the_factory_builds_presets_and_timm_models_on_one_path() -> None:
    assert models.is_known_model("vit_digits") and models.is_known_model("deit_tiny_patch16_224")
    assert not models.is_known_model("vit_no_such_model")
    assert models.create_kwargs(ModelConfig(name="vit_digits", depth=2), num_classes=10, in_chans=1) == {
        "num_classes": 10, "in_chans": 1, "depth": 2, "drop_rate": 0.0, "drop_path_rate": 0.0,
    }
    model = models.build_model(ModelConfig(name="vit_micro"), num_classes=5)
    assert models.model_input_size(model) == (3, 32, 32) and model.num_classes == 5
    with pytest.raises(ConfigError, match="model.name: unknown model 'vit_no_such_model'"):
        models.build_model(ModelConfig(name="vit_no_such_model"))
