"""``alignnet serve``: a local web page to upload an image and see what the model saw.

The page shows the top-5 classes (sigmoid probabilities: the models are trained with BCE), the
colour explanation and the signed contribution map of the selected class (click another class to
explain it), 1-4 post-hoc methods side by side with their times, and a button that downloads the
whole figure as PNG.

Why FastAPI and a plain HTML page rather than Gradio: FastAPI/Starlette/uvicorn are three small
packages with no bundled front end (Gradio pulls in hundreds of MB and loads assets and fonts
from the internet unless configured otherwise), so the page works offline from three files under
``static/``; the API can be tested with ``httpx``/``TestClient`` without a browser; and we control
the limits ourselves (upload size checked while the body streams in, images decoded with a fixed
list of decoders and a pixel limit, nothing written to disk, per-model copies so concurrent
requests never share a model's hooks and flags).

Requests are computed in Starlette's thread pool, off the event loop; each model has ``--workers``
copies, so that many requests per model run at once and further ones wait for a free copy.
"""
