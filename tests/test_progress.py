"""Progress bars: on a terminal (a pty) they appear with elapsed time and ETA; in a pipe
or with -q they don't."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

SCRIPT = ("import time; from mlscale.progress import progress\n"
          "for _ in progress(range(3), total=3, desc='chunks', unit='chunk'):\n"
          "    time.sleep(0.05)\n"
          "print('done')\n")


def _run_on_pty(env: dict[str, str], script: str = SCRIPT) -> str:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLSCALE_QUIET"}
    env.update(extra)
    return env


def test_bar_on_a_terminal():
    text = _run_on_pty(_env())
    assert "chunks" in text and "3/3" in text, text
    assert "<" in text and "chunk/s" in text or "s/chunk" in text, text  # [elapsed<eta, rate]
    assert "done" in text


def test_quiet_on_a_terminal():
    text = _run_on_pty(_env(MLSCALE_QUIET="1"))
    assert "done" in text and "3/3" not in text, text


def test_no_bar_in_a_pipe():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=_env(), timeout=60)
    assert run.returncode == 0
    assert run.stdout == "done\n" and run.stderr == "", run.stderr


def test_cli_quiet_flag_sets_the_switch(monkeypatch):
    from mlscale.cli import build_parser
    from mlscale.progress import enabled, set_quiet
    monkeypatch.delenv("MLSCALE_QUIET", raising=False)
    args = build_parser("info").parse_args(["-q", "info"])
    set_quiet(args.quiet)
    assert os.environ["MLSCALE_QUIET"] == "1" and not enabled()


COMPILE_SCRIPT = ("import numba\n"
                  "from mlscale.progress import compile_note\n"
                  "from kernel_mod import double\n"
                  "compile_note(double, 'test')\n"
                  "print(double(2.0))\n")


def test_compile_note_only_when_numba_has_no_cache(tmp_path):
    """A fresh numba cache: the note on the terminal; the same run again: cached, silent."""
    (tmp_path / "kernel_mod.py").write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef double(x):\n    return 2.0 * x\n")
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    first = _run_on_pty(env, COMPILE_SCRIPT)
    second = _run_on_pty(env, COMPILE_SCRIPT)
    assert "compiling the test kernel" in first and "4.0" in first, first
    assert "compiling" not in second and "4.0" in second, second
