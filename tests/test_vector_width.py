"""The compiled kernels give the same bits whatever vector width numba compiles them for.

:mod:`deltastats._jit` lifts LLVM's 256-bit preference on AVX-512 CPUs (a tuning only). Here
a fresh interpreter with ``DELTASTATS_VECTOR_WIDTH=native`` (LLVM's own choice) computes the
generator's values, an engine trace and a full estimate, and they must equal this process's
bit for bit. On a CPU without AVX-512 both processes compile the same code, and the test still
checks that the setting is inert there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import deltastats as ds
from deltastats import _jit
from deltastats.model.philox import philox_normal

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import deltastats as ds
    from deltastats import _jit
    from deltastats.model.philox import philox_normal

    def values():
        net = ds.MLP(widths=(6, 16, 16, 1), activation="tanh")
        params = net.sample(3, seed=4)
        x = np.random.default_rng(1).standard_normal((3, 5, 6))
        trace = ds.backprop(net, params, x, np.zeros((3, 5, 1)))
        res = ds.estimate(net, n_networks=120, batch=4, seed=2, chunk=16)
        return dict(
            normal64=philox_normal(12345, (1, 2, 3), 4099),
            normal32=philox_normal(12345, (1, 2, 3), 4099, np.float32),
            delta=np.concatenate([d.ravel() for d in trace.delta]),
            estimate=res.table["estimate"].to_numpy(float),
            se=res.table["std_error"].to_numpy(float),
        )

    if __name__ == "__main__":
        np.savez(sys.argv[1], set=_jit.WIDE_VECTORS_SET, **values())
    """
)


def test_setting_is_recorded_and_the_users_choice_wins(monkeypatch):
    from numba.core import config

    assert isinstance(_jit.WIDE_VECTORS_SET, bool)
    if _jit.WIDE_VECTORS_SET:
        assert config.CPU_FEATURES.endswith(_jit.WIDE_VECTORS)
    # Once the code generator exists (it does: kernels ran in this session), nothing changes.
    philox_normal(1, (0, 0, 0), 8)
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    assert _jit.prefer_wide_vectors() is False
    monkeypatch.setenv("DELTASTATS_VECTOR_WIDTH", "native")
    assert _jit.prefer_wide_vectors() is False


@pytest.mark.slow
def test_same_bits_at_either_vector_width(tmp_path):
    # One fresh interpreter keeps LLVM's choice; this process has the deltastats setting (wide
    # vectors where the CPU has AVX-512) and its kernels are compiled already.
    script = tmp_path / "widths.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    out = tmp_path / "native.npz"
    subprocess.run(
        [sys.executable, str(script), str(out)],
        env=env | {"DELTASTATS_VECTOR_WIDTH": "native"},
        check=True,
        timeout=600,
    )
    native = dict(np.load(out))
    assert not bool(native["set"])
    scope: dict = {"__name__": "widths"}
    exec(compile(SCRIPT, str(script), "exec"), scope)
    here = scope["values"]()
    assert here["normal64"].shape == (4099,) and here["estimate"].size > 10
    for key, value in here.items():
        np.testing.assert_array_equal(value, native[key], err_msg=key)
    assert ds.__version__
