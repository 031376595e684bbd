"""The OpenAPI 3.1 document of the JSON API, served at /api/v1/openapi.json and checked by tests."""

from __future__ import annotations

from model import config

_PROBABILITIES = {
    "type": "object",
    "properties": {name: {"type": "number", "minimum": 0, "maximum": 1} for name in config.CLASS_NAMES},
    "required": list(config.CLASS_NAMES),
    "additionalProperties": False,
}
_RISK = {
    "type": "object",
    "properties": {group: {"type": "number", "minimum": 0, "maximum": 1} for group in config.RISK_GROUPS},
    "required": list(config.RISK_GROUPS),
    "additionalProperties": False,
}
_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code."},
                "status": {"type": "integer"},
                "message": {
                    "type": "string",
                    "description": "What went wrong and what to do.",
                },
            },
            "required": ["code", "status", "message"],
        }
    },
    "required": ["error"],
}
_PREDICTION = {
    "type": "object",
    "properties": {
        "model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            "required": ["name", "version"],
        },
        "top_class": {"type": "string", "enum": list(config.CLASS_NAMES)},
        "probabilities": _PROBABILITIES,
        "melanoma_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "risk_group": {"type": "string", "enum": list(config.RISK_GROUPS)},
        "risk_probabilities": _RISK,
        "malignant_flag": {
            "type": "boolean",
            "description": "P(malignant group) is at or above the operating point chosen on validation.",
        },
        "inference_ms": {"type": "number", "minimum": 0},
        "disclaimer": {"type": "string"},
        "heatmap_png_base64": {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": "image/png",
        },
    },
    "required": [
        "model",
        "top_class",
        "probabilities",
        "melanoma_probability",
        "risk_group",
        "risk_probabilities",
        "malignant_flag",
        "inference_ms",
        "disclaimer",
    ],
}


# The image gate's refusals (HTTP 422): the Error shape with one of the gate's codes.
_REFUSAL = {
    "allOf": [
        {"$ref": "#/components/schemas/Error"},
        {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "enum": list(config.REFUSAL_CODES)},
                        "status": {"const": 422},
                    },
                }
            },
        },
    ]
}


def _error_responses(*codes: int) -> dict:
    descriptions = {
        400: "Empty, truncated or corrupt image, or no file.",
        413: "Upload over the size limit, or an image with too many pixels.",
        415: "Not an image, or an unsupported image format.",
        422: "Refused by the image gate, not classified: `code` is `not_a_lesion` (not a picture of "
        "a skin lesion), `not_dermoscopic` (skin or a lesion photographed without a dermatoscope, which "
        "the model cannot judge) or `poor_quality` (too small, too dark, overexposed, blurred, flat, "
        "damaged, or decoded from data that is mostly missing); `message` says which and what to do. "
        "A refusal is no reassurance about the lesion.",
        503: "The model is not ready.",
    }
    return {
        str(code): {
            "description": descriptions[code],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{_SCHEMA[code]}"}}},
        }
        for code in codes
    }


_SCHEMA = {400: "Error", 413: "Error", 415: "Error", 422: "Refusal", 503: "Error"}


def _json_ok(description: str, schema: dict) -> dict:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


def openapi_document() -> dict:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Skin lesion classifier API",
            "version": "1.0.0",
            "description": "Classifies a dermoscopic photo of a skin lesion into 9 classes. "
            "Not a diagnosis. Uploaded images are neither stored nor logged.",
        },
        "paths": {
            "/api/v1/predict": {
                "post": {
                    "summary": "Classify one image",
                    "parameters": [
                        {
                            "name": "heatmap",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                            "description": "Add the heat map as base64 PNG.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"image": {"type": "string", "format": "binary"}},
                                    "required": ["image"],
                                }
                            }
                        },
                    },
                    "responses": {
                        **_json_ok("The prediction", {"$ref": "#/components/schemas/Prediction"}),
                        **_error_responses(400, 413, 415, 422),
                    },
                }
            },
            "/api/v1/model": {
                "get": {
                    "summary": "Metadata of the served model",
                    "responses": _json_ok("Model metadata", {"$ref": "#/components/schemas/ModelMetadata"}),
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": _json_ok("Alive", {"$ref": "#/components/schemas/Status"}),
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: model loaded and answering",
                    "responses": {
                        **_json_ok("Ready", {"$ref": "#/components/schemas/Status"}),
                        **_error_responses(503),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Prediction": _PREDICTION,
                "Error": _ERROR,
                "Refusal": _REFUSAL,
                "Status": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}},
                    "required": ["status"],
                },
                "ModelMetadata": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "class_names": {"type": "array", "items": {"type": "string"}},
                        "risk_groups": {"type": "object"},
                        "input": {"type": "object"},
                        "metrics": {"type": "object"},
                    },
                    "required": ["name", "version", "class_names", "risk_groups", "input"],
                },
            }
        },
    }
