# Ship Python driver: one persistent interpreter per session, driven by the ship agent.
# Protocol: newline-delimited JSON. Requests arrive on fd 3 ({"code": str, "silent": bool}),
# events leave on fd 4: {"t":"ready"}, {"t":"stream","text"}, {"t":"display","text"?,"png"?},
# {"t":"done","count":int|null,"error":str|null}. fds 1 and 2 are redirected into a pipe that a
# reader thread forwards as "stream" events, so output of child processes is captured too.
#
# Spare mode (the agent prepends `_SHIP_SPARE_HOME = "<placeholder home>"` to this source): the
# interpreter is started as root before any session exists, imports what a session needs, sends
# {"t":"spare"} and waits for one request {"adopt": {uid, gid, cwd, env}}. It then drops to
# that identity for good (read back, fail closed: {"t":"adopt_failed"} and exit), becomes what
# a normally started interpreter of that user is (environment, user site, caches) and goes on
# like a normal start. No user code runs before the drop.
_SPARE_HOME = globals().get("_SHIP_SPARE_HOME")
_START_FDS = set()
if _SPARE_HOME:
    import os
    import sys
    # No bytecode files written as root into system directories.
    sys.dont_write_bytecode = True
    # What exec handed over (what a normal start gets too); anything opened later is refused.
    for _fd in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(_fd))
            _START_FDS.add(int(_fd))
        except OSError:
            pass

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
        busy = False

        def find_spec(self, name, path=None, target=None):
            if name == "ship_inline_backend":
                return importlib.util.spec_from_loader(name, _Loader())
            if name != "matplotlib" or not _CJK or self.busy:
                return None
            # CJK font settings are applied when matplotlib is first imported (not at start:
            # importing matplotlib costs a first Python call a few hundred milliseconds).
            self.busy = True
            try:
                spec = importlib.util.find_spec(name)
            finally:
                self.busy = False
            run = getattr(getattr(spec, "loader", None), "exec_module", None)
            if run is not None:
                def exec_module(mod, _run=run):
                    _run(mod)
                    _cjk_fonts(mod)

                spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder())
    os.environ["MPLBACKEND"] = "module://ship_inline_backend"
    warnings.filterwarnings("ignore", category=UserWarning, module="matplotlib")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"matplotlib\..*")
    if _CJK and "matplotlib" in sys.modules:
        _cjk_fonts(sys.modules["matplotlib"])


def _has_cjk_fonts():
    try:
        import glob
        return bool(glob.glob("/usr/share/fonts/**/NotoSansCJK*", recursive=True))
    except Exception:
        return False


_CJK = _has_cjk_fonts()


def _cjk_fonts(matplotlib):
    try:
        matplotlib.rcParams["font.sans-serif"] = [
            "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "DejaVu Sans"]
        matplotlib.rcParams["axes.unicode_minus"] = False
    except Exception:
        pass


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


# ---------------------------------------------------------------- spare interpreter
def _preload():
    """What a session's first call would import (spare mode, as root; nothing is created)."""
    import importlib
    for name in ("IPython.core.interactiveshell", "IPython.core.displayhook",
                 "IPython.core.displaypub", "IPython.core.application", "IPython.core.completer",
                 "IPython.core.completerlib", "IPython.core.magics", "IPython.core.oinspect",
                 "IPython.core.crashhandler", "sqlite3", "tempfile", "random", "shutil", "glob",
                 "bz2", "lzma", "unicodedata", "linecache", "ctypes", "sysconfig", "subprocess",
                 "shlex"):
        try:
            importlib.import_module(name)
        except Exception:
            if name.startswith("IPython.core.interactiveshell"):
                return


def _status_ids(text, key):
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split()[1:]
    return None


def _check_identity(uid, gid):
    """Reads the drop back, for every thread, and fails unless it is complete."""
    ids = (uid, uid, uid)
    if os.getresuid() != ids or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise PermissionError("credentials not switched: %r %r %r" % (
            os.getresuid(), os.getresgid(), os.getgroups()))
    tasks = os.listdir("/proc/self/task")
    if not tasks:
        raise PermissionError("no threads listed in /proc/self/task")
    for tid in tasks:
        with open("/proc/self/task/%s/status" % tid) as f:
            text = f.read()
        if (_status_ids(text, "Uid") != [str(uid)] * 4 or _status_ids(text, "Gid") != [str(gid)] * 4
                or _status_ids(text, "Groups") != []):
            raise PermissionError("thread %s kept other credentials" % tid)
        for cap in ("CapPrm", "CapEff", "CapAmb"):
            v = _status_ids(text, cap)
            if v is not None and int(v[0], 16) != 0:
                raise PermissionError("thread %s kept capabilities (%s %s)" % (tid, cap, v[0]))
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        pass
    else:
        raise PermissionError("root could be regained")


def _check_descriptors():
    """Only the descriptors of a normal start are open, and every mapped file is one the user
    can read: nothing opened as root stays reachable."""
    allowed = _START_FDS | {0, 1, 2, 3, _EVT_FD, _r}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in allowed:
            continue
        try:
            os.fstat(fd)
            target = os.readlink("/proc/self/fd/%d" % fd)
            with open("/proc/self/fdinfo/%d" % fd) as f:
                flags = next(int(l.split()[1], 8) for l in f if l.startswith("flags:"))
        except (OSError, StopIteration):
            continue  # the directory descriptor of the listing itself
        # A file a library opened while importing (IPython keeps /dev/null open) is what a
        # normal start would have too, provided the user may open it the same way.
        mode = (os.R_OK, os.W_OK, os.R_OK | os.W_OK, 0)[flags & 3]
        if target.startswith("/") and not target.endswith(" (deleted)") \
                and mode and os.access(target, mode):
            continue
        raise PermissionError("unexpected descriptor %d (%s) in the spare" % (fd, target))
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) == 6 else ""
            if path.startswith("/") and not path.endswith(" (deleted)") \
                    and not os.access(path, os.R_OK):
                raise PermissionError("mapped file %s is not readable by the user" % path)


def _relocate(value, home):
    if isinstance(value, str) and value.startswith(_SPARE_HOME):
        return home + value[len(_SPARE_HOME):]
    return None


def _adopt(req):
    """Turns the spare into the interpreter a normal start as `req`'s user would give."""
    import importlib
    import linecache
    import site

    uid, gid = int(req["uid"]), int(req["gid"])
    if uid <= 0 or gid <= 0:
        raise PermissionError("refusing uid %d gid %d" % (uid, gid))
    env = {str(k): str(v) for k, v in req["env"].items()}
    home = env["HOME"]
    os.umask(0o077)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check_identity(uid, gid)
    os.chdir(req["cwd"])
    _check_descriptors()
    # Environment and what was computed from it.
    os.environ.clear()
    os.environ.update(env)
    sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None
    linecache.clearcache()
    importlib.invalidate_caches()
    # Module globals computed from HOME while importing (e.g. a cache directory).
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for k, v in list(d.items()):
            new = _relocate(v, home)
            if new is not None:
                d[k] = new
    # The user's site directory, where site.py puts it (before the system ones), with its .pth
    # files; then sitecustomize and usercustomize again, now as the user.
    site.USER_BASE = None
    site.USER_SITE = None
    sysconfig = sys.modules.get("sysconfig")
    cfg = getattr(sysconfig, "_CONFIG_VARS", None)
    if isinstance(cfg, dict) and "userbase" in cfg:
        cfg["userbase"] = sysconfig._getuserbase()
    user_site = site.getusersitepackages()
    if site.ENABLE_USER_SITE and os.path.isdir(user_site) and user_site not in sys.path:
        system = set(site.getsitepackages())
        at = next((i for i, p in enumerate(sys.path) if p in system), len(sys.path))
        tail = sys.path[at:]
        del sys.path[at:]
        site.addsitedir(user_site, {os.path.normcase(os.path.abspath(p)) for p in sys.path})
        sys.path.extend(p for p in tail if p not in sys.path)
    try:
        if "sitecustomize" in sys.modules:
            importlib.reload(sys.modules["sitecustomize"])
        else:
            import sitecustomize  # noqa: F401
    except Exception:
        pass
    if site.ENABLE_USER_SITE:
        try:
            import usercustomize  # noqa: F401
        except Exception:
            pass
    # Like a process that exec'd as the user: its own processes may inspect it (the kernel
    # made it non-dumpable at the switch); other users still cannot.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:
        pass


def _wait_for_adoption():
    _preload()
    _send({"t": "spare"})
    line = _CMD.readline()
    if not line:
        os._exit(0)
    try:
        _adopt(json.loads(line)["adopt"])
    except BaseException as e:  # fail closed: never go on with a half-switched identity
        try:
            _send({"t": "adopt_failed", "error": "%s: %s" % (type(e).__name__, e)})
        finally:
            os._exit(1)


def main():
    if _SPARE_HOME:
        _wait_for_adoption()
    _install_backend()
    try:
        engine = _IPythonEngine()
        kind = "ipython"
    except Exception:
        engine = _PlainEngine()
        kind = "python"
    builtins.input = _no_input
    if _SPARE_HOME:
        _sync()  # output of the adoption (user site hooks) goes out before "ready"
    _send({"t": "ready", "engine": kind, "cwd": os.getcwd()})
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
