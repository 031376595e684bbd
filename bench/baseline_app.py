"""The baseline of the benchmark: Flask calling the Keras `.h5` with `model.predict` per request.

Written the way the popular Keras + Flask demos are (module-level app, model loaded at import,
TensorFlow in the web process), so the benchmark can show what the project's serving design buys.
It computes the same prediction as the served model (logits averaged over the 8 orientations,
model.export.load_served_keras_model): the comparison measures the serving design, not the model.
Served by gunicorn with the project's configuration: `gunicorn -c gunicorn.conf.py bench.baseline_app:app`.
"""

import io

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

from model import config
from model.export import load_served_keras_model

app = Flask(__name__)
model = load_served_keras_model(config.MODEL_DIR)


@app.post("/api/v1/predict")
def predict():
    """Decode, resize, model.predict, JSON."""
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
    pixels = np.asarray(image.resize(config.IMAGE_SIZE, Image.Resampling.BILINEAR), dtype=np.float32)
    probabilities = model.predict(pixels[np.newaxis], verbose=0)[0]
    return jsonify({"probabilities": dict(zip(config.CLASS_NAMES, map(float, probabilities)))})


@app.get("/readyz")
def readyz():
    """Ready once the module (and so the model) has loaded."""
    return jsonify({"status": "ready"})
