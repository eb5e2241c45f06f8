# Ship Python driver: one persistent interpreter per session, driven by the ship agent.
# Protocol: newline-delimited JSON. Requests arrive on fd 3 ({"code": str, "silent": bool}),
# events leave on fd 4: {"t":"ready"}, {"t":"stream","text"}, {"t":"display","text"?,"png"?},
# {"t":"done","count":int|null,"error":str|null}. fds 1 and 2 are redirected into a pipe that a
# reader thread forwards as "stream" events, so output of child processes is captured too.
import ast
import base64
import builtins
import codecs
import io
import json
import os
import re
import signal
import sys
import threading
import traceback
import types
import warnings

_CMD = os.fdopen(3, "rb", buffering=0)
_EVT_FD = 4
_evt_lock = threading.Lock()
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _send(obj):
    data = (json.dumps(obj) + "\n").encode()
    with _evt_lock:
        view = memoryview(data)
        while view:
            n = os.write(_EVT_FD, view)
            view = view[n:]


# ---------------------------------------------------------------- output capture
_TOKEN = ("\x1b]ship-sync-%s\x07" % os.urandom(8).hex()).encode()
_synced = threading.Event()
_sync_lock = threading.Lock()
_r, _w = os.pipe()
os.dup2(_w, 1)
os.dup2(_w, 2)
os.close(_w)


def _reader():
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf = b""
    while True:
        try:
            chunk = os.read(_r, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
        while True:
            i = buf.find(_TOKEN)
            if i < 0:
                break
            text = dec.decode(buf[:i])
            if text:
                _send({"t": "stream", "text": text})
            buf = buf[i + len(_TOKEN):]
            _synced.set()
        keep = 0
        for k in range(min(len(_TOKEN) - 1, len(buf)), 0, -1):
            if buf.endswith(_TOKEN[:k]):
                keep = k
                break
        out, buf = (buf[:-keep], buf[-keep:]) if keep else (buf, b"")
        text = dec.decode(out)
        if text:
            _send({"t": "stream", "text": text})


threading.Thread(target=_reader, daemon=True).start()


def _stream(fd):
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                            errors="backslashreplace", write_through=True, line_buffering=True)


sys.stdout = sys.__stdout__ = _stream(1)
sys.stderr = sys.__stderr__ = _stream(2)


def _sync():
    """Waits until everything written to fds 1/2 so far was forwarded."""
    with _sync_lock:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        _synced.clear()
        os.write(1, _TOKEN)
        _synced.wait(2.0)


# ---------------------------------------------------------------- interrupts
_in_user_code = False


def _on_sigint(signum, frame):
    if _in_user_code:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)

# ---------------------------------------------------------------- displays and figures
_IMAGES_PER_CELL = 64


def _png_of(data):
    png = data.get("image/png") if isinstance(data, dict) else None
    if png is None:
        return None
    if isinstance(png, (bytes, bytearray)):
        return base64.b64encode(png).decode()
    return str(png).replace("\n", "")


def _emit_display(data, result=False):
    _sync()
    png = _png_of(data)
    msg = {"t": "display"}
    text = data.get("text/plain") if isinstance(data, dict) else None
    if result:
        if text is not None:
            msg["text"] = str(text)
        if png:
            msg["png"] = png
    elif png:
        msg["png"] = png
    elif text is not None:
        msg["text"] = str(text)
    if len(msg) > 1:
        _send(msg)


def _flush_figures():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            _emit_display({"image/png": buf.getvalue()})
        plt.close("all")
    except Exception:
        pass


def _install_backend():
    import importlib.abc
    import importlib.util

    class _Loader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, mod):
            from matplotlib.backend_bases import FigureManagerBase
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            class FigureCanvasShip(FigureCanvasAgg):
                manager_class = FigureManagerBase

            def show(*args, **kwargs):
                _flush_figures()

            mod.FigureCanvas = FigureCanvasShip
            mod.FigureManager = FigureManagerBase
            mod.show = show

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ship_inline_backend":
                return importlib.util.spec_from_loader(name, _Loader())
            return None

    sys.meta_path.insert(0, _Finder())
    os.environ["MPLBACKEND"] = "module://ship_inline_backend"
    warnings.filterwarnings("ignore", category=UserWarning, module="matplotlib")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"matplotlib\..*")
    try:
        import glob
        cjk = glob.glob("/usr/share/fonts/**/NotoSansCJK*", recursive=True)
        if cjk:
            import matplotlib
            matplotlib.rcParams["font.sans-serif"] = [
                "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "DejaVu Sans"]
            matplotlib.rcParams["axes.unicode_minus"] = False
    except Exception:
        pass


_install_backend()


def _clean_tb(text):
    return _ANSI.sub("", text).rstrip("\n")


# ---------------------------------------------------------------- engines
class _IPythonEngine:
    def __init__(self):
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell

        class Pub(DisplayPublisher):
            def publish(self, data, metadata=None, *args, **kwargs):
                _emit_display(data)

            def clear_output(self, wait=False):
                pass

        class Hook(DisplayHook):
            def write_output_prompt(self):
                pass

            def write_format_data(self, format_dict, md_dict=None):
                _emit_display(format_dict, result=True)

        self.shell = InteractiveShell.instance(displayhook_class=Hook, display_pub_class=Pub)
        for colors in ("NoColor", "nocolor"):
            try:
                self.shell.colors = colors
                break
            except Exception:
                pass
        self.tb = None
        engine = self

        def _showtraceback(etype, evalue, stb):
            engine.tb = "\n".join(stb) if isinstance(stb, list) else str(stb)

        self.shell._showtraceback = _showtraceback

    def run(self, code, silent):
        global _in_user_code
        self.tb = None
        _in_user_code = True
        try:
            res = self.shell.run_cell(code, store_history=not silent, silent=silent)
        finally:
            _in_user_code = False
        err = None
        exc = res.error_before_exec or res.error_in_exec
        if exc is not None:
            err = self.tb or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            err = _clean_tb(err)
        count = None if silent else res.execution_count
        return count, err


class _PlainEngine:
    """A faithful-enough fallback with only the standard library: the last expression's
    value is displayed like the REPL, `!cmd`, `%pip`, `%cd` are understood."""

    def __init__(self):
        # A fresh __main__ for user code, separate from the driver's globals.
        main_mod = types.ModuleType("__main__")
        main_mod.__builtins__ = builtins
        sys.modules["__main__"] = main_mod
        self.ns = main_mod.__dict__
        self.count = 0
        self.out = {}
        self.ns.update({"Out": self.out, "In": [""], "display": self.display,
                        "get_ipython": lambda: None, "__ship_system__": self.system,
                        "__ship_magic__": self.magic})

    def display(self, *objs, **kwargs):
        for o in objs:
            _emit_display(self.format(o))

    @staticmethod
    def format(o):
        data = {"text/plain": repr(o)}
        rp = getattr(o, "_repr_png_", None)
        if callable(rp):
            try:
                png = rp()
                if png:
                    data["image/png"] = png
            except Exception:
                pass
        return data

    @staticmethod
    def system(cmd):
        import subprocess
        sys.stdout.flush()
        subprocess.call(cmd, shell=True)

    def magic(self, line):
        name, _, arg = line.partition(" ")
        if name in ("pip", "pip3"):
            import shlex
            import subprocess
            subprocess.call([sys.executable, "-m", "pip"] + shlex.split(arg))
            return None
        if name == "cd":
            os.chdir(os.path.expanduser(arg.strip() or "~"))
            print(os.getcwd())
            return None
        raise NameError("UsageError: Line magic function `%%%s` not found." % name)

    @staticmethod
    def transform(code):
        out = []
        for line in code.split("\n"):
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            if stripped.startswith("!"):
                out.append("%s__ship_system__(%r)" % (indent, stripped[1:]))
            elif stripped.startswith("%") and not stripped.startswith("%%"):
                out.append("%s__ship_magic__(%r)" % (indent, stripped[1:]))
            else:
                out.append(line)
        return "\n".join(out)

    def run(self, code, silent):
        global _in_user_code
        import linecache
        count = None
        if not silent:
            self.count += 1
            count = self.count
            self.ns["In"].append(code)
        filename = "<cell-%d>" % (count or 0) if not silent else "<silent>"
        src = self.transform(code)
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            tree = ast.parse(src, filename, "exec")
        except SyntaxError as e:
            return count, _clean_tb("".join(traceback.format_exception_only(type(e), e)))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not silent:
            last = ast.Expression(tree.body.pop().value)
        try:
            _in_user_code = True
            try:
                exec(compile(tree, filename, "exec"), self.ns)
                if last is not None:
                    value = eval(compile(last, filename, "eval"), self.ns)
                    if value is not None:
                        self.out[count] = value
                        self.ns["__"] = self.ns.get("_")
                        self.ns["_"] = value
                        _in_user_code = False
                        _emit_display(self.format(value), result=True)
            finally:
                _in_user_code = False
        except BaseException as e:  # noqa: B902 - user code may raise anything
            if isinstance(e, SystemExit) and e.code in (None, 0):
                return count, None
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename == _DRIVER_FILE:
                tb = tb.tb_next
            lines = traceback.format_exception(type(e), e, tb)
            return count, _clean_tb("".join(lines))
        return count, None


_DRIVER_FILE = _send.__code__.co_filename


def _no_input(*args, **kwargs):
    raise EOFError("input() is not supported: the Python session has no stdin")


def main():
    try:
        engine = _IPythonEngine()
        kind = "ipython"
    except Exception:
        engine = _PlainEngine()
        kind = "python"
    builtins.input = _no_input
    _send({"t": "ready", "engine": kind})
    for line in _CMD:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        try:
            count, err = engine.run(req.get("code", ""), bool(req.get("silent")))
        except BaseException as e:  # the driver itself must survive anything
            count, err = None, _clean_tb("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        try:
            _flush_figures()
        except BaseException:
            pass
        _sync()
        _send({"t": "done", "count": count, "error": err})


main()
