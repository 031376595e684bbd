# Serving image: the web app and the committed LiteRT model, no TensorFlow.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    MODEL_DIR=/app/models/skin_cnn

WORKDIR /app

COPY requirements-serve.txt constraints-serve.txt ./
RUN pip install --no-cache-dir -r requirements-serve.txt -c constraints-serve.txt

# Only what serving needs: the config, integrity, preprocessing, model_card, advice and quality
# modules of model/, the web app, and the model files (LiteRT classifier and gate, metadata, plots;
# not the .h5).
COPY model/__init__.py model/config.py model/integrity.py model/preprocessing.py model/model_card.py model/advice.py model/quality.py ./model/
COPY webapp ./webapp
COPY gunicorn.conf.py ./
COPY models/skin_cnn/model.tflite models/skin_cnn/gate.tflite models/skin_cnn/metadata.json models/skin_cnn/training_curves.png ./models/skin_cnn/
COPY models/skin_cnn/evaluation ./models/skin_cnn/evaluation

RUN useradd --create-home --uid 10001 app
USER 10001

EXPOSE 8000
# Run by path, not as webapp.healthcheck: importing the package would load Flask, LiteRT and NumPy
# (0.3 s and 56 MB) every 30 s just to make one request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "webapp/healthcheck.py"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
