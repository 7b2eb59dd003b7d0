"""Hertz-dev's weights: the full-size modules have the published names and shapes, published
checkpoints convert once (``voicefleet runtime convert-hertz``) and load, and bad weights stop
the runtime with exit code 2 and a message saying what to change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.runtime.hertz_checkpoints import weight_normed, write_published
from voicefleet.runtime.backends.hertz.config import FULL, TINY
from voicefleet.runtime.backends.hertz.models import HertzModel
from voicefleet.runtime.backends.hertz.weights import PARTS, load_part
from voicefleet.testing.loopback import free_port

pytestmark = pytest.mark.runtime

# Parameters per published file, weight-norm g tensors included (hertz-facts.md 1.2-1.6).
PUBLISHED_PARAMS = {
    "codec": 94_082_273,
    "quantizer": 50_421_765,
    "resynthesizer": 1_638_322_696,
    "backbone": 6_745_243_648,
}
# A sample of the published tables' rows, one or two per kind of layer.
PUBLISHED_SHAPES = {
    "codec": {
        "encoder.res_stack.0.conv.weight": (16, 1, 7),
        "encoder.res_stack.1.res_block.0.conv1.conv.weight": (16, 16, 7),
        "encoder.res_stack.3.res_block.3.conv.weight": (256, 128, 8),
        "encoder.res_stack.3.res_block.3.conv.bias": (256,),
        "decoder.multiplier_proj.weight": (1024, 256, 1),
        "decoder.res_stack.2.res_block.4.conv2.weight": (1024, 1024, 1),
        "decoder.res_stack.3.res_block.0.deconv.weight": (1024, 512, 8),
        "decoder.res_stack.5.res_block.0.deconv.weight": (256, 64, 4),
        "decoder.res_stack.6.conv.weight": (1, 64, 7),
        "compressor.proj_in.weight": (64, 256),
        "compressor.proj_out.weight": (256, 32),
    },
    "quantizer": {
        "input.weight": (2048, 32),
        "ffnn.gateup_proj.weight": (16384, 2048),
        "ffnn.down_proj.weight": (2048, 8192),
        "compressor.project_in.weight": (5, 2048),
        "compressor.project_out.bias": (2048,),
    },
    "resynthesizer": {
        "io.input_projection.weight": (4096, 32),
        "io2.input_projection.bias": (4096,),
        "io.fc_loc.weight": (256, 4096),
        "io.fc_weight.weight": (8, 4096),
        "plex_projection2.weight": (4096, 2048),
        "out_norm.weight": (4096,),
        "stack.layers.7.attn.attn.proj_qkv.weight": (12288, 4096),
        "stack.layers.0.attn.attn.norm_k.weight": (4096,),
        "stack.layers.3.ffnn.ffnn.gateup_proj.weight": (22016, 4096),
    },
    "backbone": {
        "input2.weight": (4096, 32),
        "layers.31.attn.attn.attn_out.weight": (4096, 4096),
        "layers.0.ffnn.ffnn.down_proj.weight": (4096, 11008),
        "layers.5.attn.attn_norm.weight": (4096,),
        "output.norm.weight": (4096,),
        "output2.output.weight": (32768, 4096),
    },
}


def test_full_size_modules_have_the_published_names_and_shapes() -> None:
    with torch.device("meta"):
        model = HertzModel(FULL)
    for part, module in model.parts().items():
        state = module.state_dict()
        for name, shape in PUBLISHED_SHAPES[part].items():
            assert tuple(state[name].shape) == shape, (part, name)
        params = sum(t.numel() for t in state.values())
        if part == "codec":  # the published file keeps each normed weight's g beside it
            params += sum(state[f"{name}.weight"].shape[0] for name in weight_normed(module))
        assert params == PUBLISHED_PARAMS[part], part


def _voicefleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "voicefleet", "runtime", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[HertzModel, Path]:
    """A random tiny model saved as published checkpoints, converted by the real command."""
    torch.manual_seed(11)
    model = HertzModel(TINY)
    directory = tmp_path_factory.mktemp("hertz-published")
    write_published(model, directory)
    result = _voicefleet("convert-hertz", str(directory), "--tiny")
    assert result.returncode == 0, result.stderr
    return model, directory


def test_published_checkpoints_convert_and_load(converted: tuple[HertzModel, Path]) -> None:
    original, directory = converted
    loaded = HertzModel(TINY)
    for part, module in loaded.parts().items():
        load_part(directory, part, module, torch.device("cpu"))
        for name, tensor in module.state_dict().items():
            expected = original.parts()[part].state_dict()[name]
            # Stored in bf16: equal to its rounding.
            torch.testing.assert_close(tensor, expected, rtol=1e-2, atol=1e-3, msg=name)


def _serve(weights: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _voicefleet(
        "serve",
        "--backend=hertz-tiny",
        "--host=127.0.0.1",
        f"--port={free_port()}",
        f"--weights={weights}",
        "--codec-workers=0",
    )


def test_wrong_shape_exits_2_naming_the_tensor(
    converted: tuple[HertzModel, Path], tmp_path: Path
) -> None:
    _, directory = converted
    bad = tmp_path / "bad"
    bad.mkdir()
    for _, name in PARTS.values():
        (bad / name).write_bytes((directory / name).read_bytes())
    tensors = load_file(str(bad / PARTS["backbone"][1]))
    name = "layers.0.attn.attn.proj_qkv.weight"
    tensors[name] = tensors[name].t().contiguous()
    save_file(tensors, str(bad / PARTS["backbone"][1]))
    result = _serve(str(bad), tmp_path)
    assert result.returncode == 2, result.stderr
    assert name in result.stderr
    assert "expected [192, 64]" in result.stderr
    assert "convert-hertz" in result.stderr


def test_unconverted_checkpoints_exit_2_saying_what_to_run(
    converted: tuple[HertzModel, Path], tmp_path: Path
) -> None:
    _, directory = converted
    published = tmp_path / "published-only"
    published.mkdir()
    for pt, _ in PARTS.values():
        (published / pt).write_bytes((directory / pt).read_bytes())
    result = _serve(str(published), tmp_path)
    assert result.returncode == 2
    assert f"voicefleet runtime convert-hertz {published}" in result.stderr
    result = _serve("hf://si-pbc/hertz-dev", tmp_path)
    assert result.returncode == 2
    assert "convert-hertz hf://si-pbc/hertz-dev" in result.stderr


def test_converter_refuses_a_checkpoint_of_another_shape(tmp_path: Path) -> None:
    torch.manual_seed(3)
    write_published(HertzModel(TINY), tmp_path)
    result = _voicefleet("convert-hertz", str(tmp_path))  # full size expected, tiny given
    assert result.returncode == 2
    assert "does not hold Hertz-dev's codec as published" in result.stderr
