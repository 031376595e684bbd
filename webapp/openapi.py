"""The OpenAPI 3.1 document of the JSON API, served at /api/v1/openapi.json and checked by tests."""

from __future__ import annotations

from model import advice, config
from webapp import DEFAULTS
from webapp.budget import BUSY_MESSAGE
from webapp.errors import CODES, EXTRA_CODES, MESSAGES, REFUSAL_TITLES, size_words
from webapp.gate import REASONS, refusal_message

# Values of the `heatmap` parameter; webapp.api refuses any other with a 400.
HEATMAP_TRUE = ("true", "1", "yes", "on")
HEATMAP_FALSE = ("false", "0", "no", "off")
HEATMAP_VALUES = HEATMAP_TRUE + HEATMAP_FALSE
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
                "code": {
                    "type": "string",
                    "enum": sorted(set(CODES.values()) | set(EXTRA_CODES)),
                    "description": "Stable and machine-readable: branch on this, not on the message.",
                },
                "message": {"type": "string", "description": "For people: the field and the real cause."},
                "status": {"type": "integer"},
            },
            "required": ["code", "message", "status"],
        }
    },
    "required": ["error"],
}
_ADVICE = {
    "type": "object",
    "description": "The one answer, by the rule of model/advice.py: 'see_doctor_soon' when P(malignant) "
    "reaches the validated malignant threshold; else 'have_it_checked' when P(malignant) + "
    "P(pre-malignant) reaches it; else 'keep_watching'. A model without a validated threshold always "
    "says 'have_it_checked'.",
    "properties": {
        "level": {"type": "string", "enum": list(advice.LEVEL_ORDER)},
        "title": {"type": "string"},
        "next_step": {"type": "string"},
        "reason": {"type": "string"},
        "malignant_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "pre_malignant_probability": {"type": "number", "minimum": 0, "maximum": 1},
        "threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "sensitivity": {"type": "string"},
    },
    "required": [
        "level",
        "title",
        "next_step",
        "reason",
        "malignant_probability",
        "pre_malignant_probability",
        "threshold",
        "sensitivity",
    ],
    "additionalProperties": False,
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
        "risk_group": {
            "type": "string",
            "enum": list(config.RISK_GROUPS),
            "description": "The risk group of top_class only. It is not the answer: the most likely class "
            "can be benign while the malignant classes together reach the threshold; advice and "
            "malignant_flag are the answer.",
        },
        "risk_probabilities": _RISK,
        "malignant_flag": {
            "type": "boolean",
            "description": "P(malignant group) is at or above the operating point chosen on validation "
            "(advice.level is see_doctor_soon); false for a model without a validated operating point.",
        },
        "advice": {"$ref": "#/components/schemas/Advice"},
        "inference_ms": {"type": "number", "minimum": 0},
        "caveats": {
            "type": "array",
            "description": "Reasons to trust this answer less (empty when none), e.g. heat_on_frame: the "
            "heat map's hottest area lies on the picture's frame, not on the lesion.",
            "items": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            },
        },
        "disclaimer": {"type": "string"},
        "heatmap_class": {
            "type": "string",
            "enum": list(config.CLASS_NAMES),
            "description": "The class the heat map (and the heat_on_frame caveat) explains: the most likely "
            "class of the risk groups the advice rests on (malignant for see_doctor_soon, malignant or "
            "pre-malignant for have_it_checked, any for keep_watching and for a model without a validated "
            "operating point), so top_class unless the two disagree.",
        },
        "heatmap_png_base64": {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": "image/png",
            "description": "Only with heatmap=true: the photo (longest side 320 px) with the class "
            "activation map of heatmap_class blended over it, scaled per image from its lowest (dark purple) "
            "to its highest value (yellow); it shows where the model looked, not a probability.",
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
        "advice",
        "inference_ms",
        "heatmap_class",
        "caveats",
        "disclaimer",
    ],
}


ERROR_DESCRIPTIONS = {
    400: "No file in the field `image` (code missing_image), more than one (too_many_images), an invalid "
    "`heatmap` value (invalid_parameter), or an empty, truncated or corrupt image (bad_request).",
    404: "No such route.",
    405: "The route exists but not for this method; the Allow header lists the methods it takes.",
    408: "The upload stalled (no data for 10 s) before it was complete.",
    413: "Upload over the size limit or an image with too many pixels (payload_too_large), or a form with "
    "too many fields (too_many_fields).",
    415: "Not an image, an unsupported image format, or a body that is not multipart/form-data.",
    422: "A readable image that the model cannot judge: " + ", ".join(REFUSAL_TITLES) + ".",
    500: "An unexpected error; details go to the server log only.",
    503: "The model is not ready.",
}
ERROR_EXAMPLES = {
    400: ("missing_image", "No file was uploaded in the field `image`. Choose a photo of the skin lesion."),
    404: ("not_found", "There is no page at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    408: ("request_timeout", "The upload stalled before it was complete. Please try again."),
    413: ("payload_too_large", MESSAGES[413].format(limit=size_words(DEFAULTS["MAX_CONTENT_LENGTH"]))),
    415: (
        "unsupported_media_type",
        "The file is not an image we can read. Please upload a JPEG or PNG photo.",
    ),
    422: (config.NOT_DERMOSCOPIC, refusal_message(REASONS[config.NOT_DERMOSCOPIC])),
    500: ("internal_error", "Something went wrong on our side. Please try again."),
    503: ("not_ready", "model output is not a distribution"),
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
    responses = {}
    for status in codes:
        code, message = ERROR_EXAMPLES[status]
        example = {"error": {"code": code, "message": message, "status": status}}
        responses[str(status)] = {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{'Refusal' if status == 422 else 'Error'}"},
                    "example": example,
                }
            },
        }
        if status == 405:
            responses[str(status)]["headers"] = {
                "Allow": {"description": "The methods this route takes.", "schema": {"type": "string"}}
            }
    return responses


def _busy_response() -> dict:
    """The upload route's 503: the worker's budget of upload bytes being received is spent (webapp.budget)."""
    example = {"error": {"code": "busy", "message": BUSY_MESSAGE, "status": 503}}
    return {
        "description": "Too many uploads being received at once (code busy): send it again after "
        "the Retry-After seconds.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}, "example": example}
        },
    }


def _json_ok(description: str, schema: dict, example: dict | None = None) -> dict:
    content = {"schema": schema} | ({"example": example} if example is not None else {})
    return {"200": {"description": description, "content": {"application/json": content}}}


def metadata_example() -> dict:
    """An illustrative, shortened /api/v1/model answer (the real one adds training, data and metrics)."""
    return {
        "name": "skin_cnn",
        "version": "1.0.0",
        "class_names": list(config.CLASS_NAMES),
        "risk_groups": {group: list(classes) for group, classes in config.RISK_GROUPS.items()},
        "input": {"size": list(config.IMAGE_SIZE)},
        "metrics": {"operating_point": {"malignant_threshold": 0.3, "chosen_on": "validation"}},
    }


def prediction_example() -> dict:
    """An illustrative answer (made-up numbers, valid against the Prediction schema)."""
    probabilities = dict.fromkeys(config.CLASS_NAMES, 0.0) | {
        "nevus": 0.7,
        "melanoma": 0.05,
        "dermatofibroma": 0.25,
    }
    risk = {group: sum(probabilities[c] for c in classes) for group, classes in config.RISK_GROUPS.items()}
    answer = advice.advise(risk, {"metrics": {"operating_point": {"malignant_threshold": 0.3}}})
    return {
        "model": {"name": config.MODEL_NAME, "version": config.MODEL_VERSION},
        "top_class": "nevus",
        "probabilities": probabilities,
        "melanoma_probability": 0.05,
        "risk_group": "benign",
        "risk_probabilities": risk,
        "malignant_flag": False,
        "advice": answer.as_dict(),
        "inference_ms": 2.1,
        "heatmap_class": advice.explained_class(answer, probabilities),
        "caveats": [],
        "disclaimer": advice.DISCLAIMER,
    }


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
                    "operationId": "predict",
                    "description": "The photo goes in the multipart field `image`. Answers one level of "
                    "concern (`advice`) with its next step, then the per-class detail. Uploads are neither "
                    "stored nor logged.",
                    "parameters": [
                        {
                            "name": "heatmap",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": list(HEATMAP_VALUES)},
                            "description": "Add the heat map as base64 PNG. Send one of the listed "
                            "values; the server also ignores their case and surrounding spaces and reads an "
                            "empty value as false. Any other value is a 400 (code invalid_parameter).",
                            "example": "true",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        "heatmap": {"type": "string", "enum": list(HEATMAP_VALUES)},
                                    },
                                    "required": ["image"],
                                }
                            }
                        },
                    },
                    "responses": {
                        **_json_ok(
                            "The prediction",
                            {"$ref": "#/components/schemas/Prediction"},
                            prediction_example(),
                        ),
                        **_error_responses(400, 405, 408, 413, 415, 422, 500),
                        "503": _busy_response(),
                    },
                }
            },
            "/api/v1/model": {
                "get": {
                    "summary": "Metadata of the served model",
                    "operationId": "getModel",
                    "responses": {
                        **_json_ok(
                            "Model metadata",
                            {"$ref": "#/components/schemas/ModelMetadata"},
                            metadata_example(),
                        ),
                        **_error_responses(405, 500),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "getOpenApi",
                    "responses": {
                        **_json_ok(
                            "The OpenAPI 3.1 document",
                            {"$ref": "#/components/schemas/OpenApiDocument"},
                            {"openapi": "3.1.0", "info": {"title": "...", "version": "..."}, "paths": {}},
                        ),
                        **_error_responses(405),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "getLiveness",
                    "responses": {
                        **_json_ok("Alive", {"$ref": "#/components/schemas/Status"}, {"status": "ok"}),
                        **_error_responses(405),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: model loaded and answering",
                    "operationId": "getReadiness",
                    "responses": {
                        **_json_ok("Ready", {"$ref": "#/components/schemas/Status"}, {"status": "ready"}),
                        **_error_responses(405, 500, 503),
                    },
                }
            },
        },
        "components": {
            "responses": {"NotFound": _error_responses(404)["404"]},
            "schemas": {
                "Prediction": _PREDICTION,
                "Advice": _ADVICE,
                "Error": _ERROR,
                "Refusal": _REFUSAL,
                "OpenApiDocument": {"type": "object", "required": ["openapi", "info", "paths"]},
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
            },
        },
    }
