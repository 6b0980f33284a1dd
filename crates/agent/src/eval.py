# The zygote agent's warm Python REPL server (embedded in zygote-agent).
#
# Protocol: one JSON object per line. Requests arrive on the original stdin,
# replies leave on the original stdout; both are moved away from fds 0/1 at
# start so user code (and its subprocesses) cannot touch the protocol.
#   {"op": "eval", "code": "..."} -> {"result", "error", "traceback", "stdout", "stderr"}
#   {"op": "reseed"}              -> {"ok": true}   (after a snapshot restore)
#   {"op": "ping"}                -> {"ok": true}
# On start it prints {"ready": true}.
import ast
import json
import linecache
import os
import random
import signal
import sys
import traceback

_ctl_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
_ctl_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
_devnull = os.open(os.devnull, os.O_RDWR)
_console = os.dup(2)
os.dup2(_devnull, 0)
os.dup2(_devnull, 1)


def _capture_fd(name):
    try:
        return os.memfd_create(name)
    except (AttributeError, OSError):
        import tempfile

        return os.dup(tempfile.TemporaryFile().fileno())


_out_fd = _capture_fd("eval-stdout")
_err_fd = _capture_fd("eval-stderr")
_running = False


def _on_sigint(signum, frame):
    if _running:
        raise KeyboardInterrupt
    # Between evaluations an interrupt has nothing to stop.


signal.signal(signal.SIGINT, _on_sigint)

_globals = {"__name__": "__main__", "__builtins__": __builtins__}
_SERVER_FILE = _on_sigint.__code__.co_filename


def _collect(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return b"".join(chunks).decode("utf-8", "replace")


def _flush():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


def _user_tb(tb):
    while tb is not None and tb.tb_frame.f_code.co_filename == _SERVER_FILE:
        tb = tb.tb_next
    return tb


def _run(code, n):
    global _running
    fname = "<eval-%d>" % n
    linecache.cache[fname] = (len(code), None, code.splitlines(True), fname)
    result = error = tb_text = None
    _flush()
    os.dup2(_out_fd, 1)
    os.dup2(_err_fd, 2)
    try:
        try:
            tree = ast.parse(code, fname, "exec")
        except SyntaxError as e:
            lines = traceback.format_exception_only(type(e), e)
            error = lines[-1].strip()
            tb_text = "".join(lines)
            return result, error, tb_text
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        try:
            _running = True
            exec(compile(tree, fname, "exec"), _globals)
            if last is not None:
                value = eval(compile(last, fname, "eval"), _globals)
                if value is not None:
                    _globals["_"] = value
                    result = repr(value)
            _running = False
        except BaseException as e:
            _running = False
            lines = traceback.format_exception_only(type(e), e)
            error = lines[-1].strip() if lines else type(e).__name__
            tb_text = "".join(traceback.format_exception(type(e), e, _user_tb(e.__traceback__)))
        return result, error, tb_text
    finally:
        _running = False
        _flush()
        os.dup2(_devnull, 1)
        os.dup2(_console, 2)


def _reseed():
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            np.random.seed()
        except Exception:
            pass


def _send(obj):
    _ctl_out.write(json.dumps(obj) + "\n")
    _ctl_out.flush()


def _main():
    _send({"ready": True})
    n = 0
    for line in _ctl_in:
        try:
            req = json.loads(line)
        except ValueError:
            _send({"ok": False})
            continue
        op = req.get("op")
        if op == "eval":
            n += 1
            try:
                result, error, tb_text = _run(req.get("code", ""), n)
            except KeyboardInterrupt:
                # An interrupt that landed in the server's own frames.
                result, error, tb_text = None, "KeyboardInterrupt", None
            _send(
                {
                    "result": result,
                    "error": error,
                    "traceback": tb_text,
                    "stdout": _collect(_out_fd),
                    "stderr": _collect(_err_fd),
                }
            )
        elif op == "reseed":
            _reseed()
            _send({"ok": True})
        else:
            _send({"ok": True})


_main()
