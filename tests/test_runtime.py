"""The malloc arena cap (psr/runtime.py), observed in fresh processes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psr import runtime
from psr.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
needs_glibc = pytest.mark.skipif(runtime._libc() is None, reason="glibc malloc only")


def run_python(code: str, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != runtime.MALLOC_ARENAS_ENV}
    completed = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                               timeout=120, cwd=ROOT, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.strip()


# Starts 6 threads that each malloc and free, then counts glibc's arenas in malloc_info's XML.
COUNT_ARENAS = """
    import ctypes, os, sys, tempfile, threading
    from psr import runtime
    if sys.argv[-1] != "default":
        assert runtime.limit_malloc_arenas(int(sys.argv[-1]))
    libc = runtime._libc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    barrier = threading.Barrier(6)
    def work():
        barrier.wait()
        for _ in range(2000):
            libc.free(libc.malloc(4096))
    threads = [threading.Thread(target=work) for _ in range(6)]
    [t.start() for t in threads]; [t.join() for t in threads]
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    path = os.path.join(tempfile.mkdtemp(), "info.xml")
    stream = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(path).read().count("<heap nr="))
"""


@needs_glibc
@pytest.mark.parametrize("limit, expected", [("1", lambda n: n == 1), ("2", lambda n: n <= 2),
                                             ("default", lambda n: n > 2)])
def test_arena_cap_limits_the_heaps_new_threads_get(limit, expected):
    arenas = int(run_python(COUNT_ARENAS, limit))
    assert expected(arenas), arenas


def test_arena_setting_from_the_environment(monkeypatch):
    monkeypatch.delenv(runtime.MALLOC_ARENAS_ENV, raising=False)
    assert runtime.malloc_arenas_from_env() == 1
    monkeypatch.setenv(runtime.MALLOC_ARENAS_ENV, " 0 ")
    assert runtime.malloc_arenas_from_env() == 0
    assert runtime.configure_host_memory() == 0  # 0 keeps glibc's default
    monkeypatch.setenv(runtime.MALLOC_ARENAS_ENV, "4")
    assert runtime.malloc_arenas_from_env() == 4
    assert runtime.configure_host_memory(0) == 0  # an explicit cap (bench's --malloc-arenas) wins over the variable
    for bad in ("two", "-1", "1.5"):
        monkeypatch.setenv(runtime.MALLOC_ARENAS_ENV, bad)
        with pytest.raises(ConfigError, match=rf"PSR_MALLOC_ARENAS='{bad}' is not a whole number >= 0; use e\.g\."):
            runtime.malloc_arenas_from_env()
    with pytest.raises(ValueError, match="at least 1"):
        runtime.limit_malloc_arenas(0)


def test_command_line_applies_the_cap_before_tensorflow_loads():
    # The cap only reaches threads started after it, so the CLI module must not pull TensorFlow in.
    loaded = run_python("import sys, psr.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    assert loaded == "False False"


def test_bad_arena_setting_is_one_clear_error():
    env = dict(os.environ, **{runtime.MALLOC_ARENAS_ENV: "many"})
    completed = subprocess.run([sys.executable, "main.py", "run", "experiments/quickstart.yaml", "--dry-run"],
                               capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        "error: PSR_MALLOC_ARENAS='many' is not a whole number >= 0; "
        "use e.g. PSR_MALLOC_ARENAS=1 (one malloc arena) or 0 (glibc's default)"
    )
