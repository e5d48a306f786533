"""MkDocs hook: keep third-party deprecation notices that the gallery's examples trigger off their pages.

mkdocs-gallery shows everything an example writes to stderr under its code. Starlette's notice about the
``httpx`` test client (the web page example uses FastAPI's ``TestClient``) is about the environment, not the
example, so it is filtered here, for the build only; the examples themselves stay plain scripts.
"""

import warnings


def on_config(config):
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    return config
