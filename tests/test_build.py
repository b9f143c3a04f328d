"""The native build exists, is the one we think it is, and the CLI reports it."""
import pytest
import torch

import finegrained_ops
from finegrained_ops import _native
from finegrained_ops.__main__ import main


def test_extension_is_a_compiled_module():
    assert _native._C.__file__.endswith(".so")


def test_build_info_matches_the_package_and_torch():
    info = _native._C.build_info()
    assert info["version"] == finegrained_ops.__version__
    assert info["torch_version"] == torch.__version__
    assert info["with_cuda"] == bool(info["cuda_version"])
    assert info["with_openmp"] == ("OpenMP" in torch.__config__.parallel_info())
    assert info["num_threads"] == torch.get_num_threads()


def test_info_command_reports_the_native_build(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "native build" in out and _native._C.__file__ in out
    assert ("CUDA" if _native.BUILD_INFO["with_cuda"] else "CPU only") in out


def test_cuda_tensor_on_cpu_build_is_a_clear_error():
    if _native.BUILD_INFO["with_cuda"]:
        pytest.skip("CUDA build: CUDA tensors are supported")
    with pytest.raises(RuntimeError, match="built without CUDA"):
        _native.require_cuda_build(torch.device("cuda"))


def test_subcommands_refuse_unknown_arguments(capsys):
    for argv in (["demo", "--nope"], ["info", "extra"], ["nope"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
