"""The native build exists, is the one we think it is, and the CLI reports it; the build
script's decisions."""
import importlib.util
import os

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
    assert f"CPU kernels      {_native.BUILD_INFO['cpu_capability']} (this CPU: " in out
    ops = next(line for line in out.splitlines() if line.startswith("native ops"))
    assert "class_loss" in ops and "choices" not in ops


def test_version_and_program_name(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"finegrained_ops {finegrained_ops.__version__}"
    monkeypatch.setattr("sys.argv", ["/venv/bin/finegrained-ops", "--help"])
    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().out.startswith("usage: finegrained-ops ")


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


def load_setup_script():
    spec = importlib.util.spec_from_file_location(
        "finegrained_ops_setup", os.path.join(os.path.dirname(__file__), os.pardir, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself runs only as __main__
    return module


def test_cuda_architectures_default_to_the_visible_gpus_else_a_portable_list(monkeypatch):
    setup = load_setup_script()
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    archs, _ = setup.cuda_arch_list()
    assert archs == setup.PORTABLE_CUDA_ARCHS and archs.endswith("+PTX")
    assert {"8.0", "8.6", "8.9"} <= set(archs.replace("+PTX", "").split(";"))

    capabilities = [(8, 6), (12, 0), (8, 6)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: capabilities[i])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_86", "sm_90a"])
    assert setup.cuda_arch_list()[0] == "8.6;9.0+PTX"  # 12.0 capped at torch's newest

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    assert setup.cuda_arch_list() == ("8.0;9.0", "TORCH_CUDA_ARCH_LIST")


def test_native_ops_release_the_gil():
    """While a native entry point computes in one thread, Python code runs in another: the
    main thread's clock readings fall inside a native call. Holding the GIL, at most one per
    call could (read just before the call enters native code)."""
    import threading
    import time

    from finegrained_ops._native import _C

    emb = torch.nn.functional.normalize(torch.randn(4000, 64), dim=1)
    labels = torch.randint(0, 40, (4000,))
    none, none_labels = emb[:0], labels[:0]
    args = (emb, labels, torch.arange(4000), emb, labels, none, none_labels, 0.2, "all", 1.0, True,
            True, -1)
    started, done, calls = threading.Event(), threading.Event(), []

    def count():
        started.set()
        try:
            for _ in range(3):
                begin = time.perf_counter()
                _C.triplet_count(*args)
                calls.append((begin, time.perf_counter()))
        finally:  # a failing call must not leave the main thread waiting
            done.set()

    worker = threading.Thread(target=count)
    worker.start()
    started.wait()
    readings = []
    while not done.wait(0.0005):
        readings.append(time.perf_counter())
    worker.join()
    inside = [sum(begin < t < end for t in readings) for begin, end in calls]
    assert max(inside) >= 3, inside


def test_the_wheel_requires_the_torch_release_it_is_built_against_and_numpy_only():
    """A binary imports under the torch it was compiled against only: the wheel says so
    (`make package-check` reads the built wheel's metadata); everything else is an extra."""
    requirements = load_setup_script().requirements()
    assert requirements == [f"torch=={torch.__version__.split('+')[0]}", "numpy"]
