"""
# The web page

`alignnet serve` opens a local page where you upload an image and see the top-5 classes, the colour
explanation and the contribution map of any class, next to post-hoc methods; it needs the `web` extra and
works offline (the page loads nothing from other hosts):

```bash
pip install "alignnet[web]"
alignnet serve            # then open http://127.0.0.1:8000
```

The page is a thin client of a small JSON API, so everything it shows is also available from code. Here the
app is called in-process with FastAPI's `TestClient` (no server, no browser): upload a PNG, get the
explanation back as numbers and PNG data URLs.
"""

import base64
import io

import matplotlib.pyplot as plt
from fastapi.testclient import TestClient
from PIL import Image

from alignnet.data import load_embedded
from alignnet.serve.app import create_app
from alignnet.serve.backend import build_models

client = TestClient(create_app(build_models(["fmnist_bcos"], progress=False)))
print(client.get("/api/health").json())

buf = io.BytesIO()
Image.fromarray(load_embedded("test").images[0]).save(buf, format="PNG")  # a raw 28x28 Fashion-MNIST image
r = client.post("/api/explain", content=buf.getvalue(), headers={"content-type": "image/png"}).json()
print("top-3:", [(t["name"], round(t["probability"], 3)) for t in r["top"][:3]])
print(f"logit {r['logit']:.3f} = contributions {r['contribution_sum']:.3f} + bias {r['bias']:.3f}")

# %%
# The images come back as PNG data URLs, ready for an `<img>` tag; decoded here to draw them.


def decode(url):
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


fig, axes = plt.subplots(1, 3, figsize=(7, 2.6))
for ax, key in zip(axes, ("input", "colour", "contributions"), strict=True):
    ax.imshow(decode(r[key]))
    ax.set_title(key if key != "colour" else f"colour: {r['target_name']}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
