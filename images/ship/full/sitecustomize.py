
# Bay ship image (flavour `full`), appended to Debian's sitecustomize.py: a session user's site
# directory (~/.local/lib/python3.X/site-packages) exists and is on sys.path from the start, so
# that what `pip install` / `%pip install` puts there imports in the interpreter that is already
# running. site.py skips a user site that does not exist yet, and the import system does not
# look at a directory that was missing when it first searched it.
def _bay_user_site():
    import os
    import site
    import sys

    if not site.ENABLE_USER_SITE or os.geteuid() == 0:
        return
    user_site = site.getusersitepackages()
    if user_site in sys.path:
        return
    try:
        os.makedirs(user_site, exist_ok=True)
    except OSError:
        return
    # Where site.py puts it: before the system site directories.
    system = set(site.getsitepackages())
    at = next((i for i, p in enumerate(sys.path) if p in system), len(sys.path))
    sys.path.insert(at, user_site)


_bay_user_site()
del _bay_user_site
