"""The one answer a person gets: a level of concern and its next step, by one written rule.

The rule (the same for the page and the API):

1. "see a doctor soon" when P(malignant group) is at or above the malignant threshold of the
   validated operating point (metadata: metrics.operating_point.malignant_threshold);
2. otherwise "have it checked" when P(malignant group) + P(pre-malignant group) reaches that same
   threshold: a pre-malignant lesion (actinic keratosis) is worth a visit, not an urgent one;
3. otherwise "low concern, keep watching".

A model whose metadata has no operating point was never validated, so it cannot say "low concern":
every photo gets "have it checked". The probabilities are the model's, with the temperature fitted on
validation (their calibration holds there, not on other clinics' pictures). No model number
is written here: the threshold and the figures quoted in the reason come from the model's metadata.
This module stays free of heavy imports: the serving image has no TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from model import config

MALIGNANT = "malignant"
PRE_MALIGNANT = "pre-malignant"
BENIGN = "benign"

SEE_DOCTOR = "see_doctor_soon"
HAVE_CHECKED = "have_it_checked"
KEEP_WATCHING = "keep_watching"

LEVELS = {
    SEE_DOCTOR: {
        "title": "See a doctor soon",
        "next_step": "Book an appointment with your doctor or a dermatologist in the next few weeks "
        "and show them this spot.",
    },
    HAVE_CHECKED: {
        "title": "Have it checked",
        "next_step": "Mention this spot to your doctor at your next visit, or book one if it is new, "
        "growing, sore or scaly.",
    },
    KEEP_WATCHING: {
        "title": "Low concern: keep watching",
        "next_step": "Keep an eye on it. See a doctor if it changes in size, shape or colour, bleeds, "
        "itches or does not heal, or if you are worried.",
    },
}
# Order of concern, highest first; the page and the API document it.
LEVEL_ORDER = (SEE_DOCTOR, HAVE_CHECKED, KEEP_WATCHING)
# The groups each level's advice rests on. The heat map explains the most likely class of these, so a
# "see a doctor" answer shows what looked malignant even when a benign class is the most likely one.
EXPLAINED_GROUPS = {
    SEE_DOCTOR: (MALIGNANT,),
    HAVE_CHECKED: (MALIGNANT, PRE_MALIGNANT),
    KEEP_WATCHING: (MALIGNANT, PRE_MALIGNANT, BENIGN),
}
# Under every answer, on the page and in the API: what an answer is worth, and what it is not.
DISCLAIMER = (
    "Not a diagnosis. The model can be wrong in either direction, and its answer only means something "
    "for a dermoscopic photo of one skin lesion. See a doctor about any spot that is new, changing, "
    "bleeding or worrying you, whatever this says."
)


@dataclass(frozen=True)
class Advice:
    """One level of concern, its next step, and why."""

    level: str
    title: str
    next_step: str
    reason: str
    malignant_probability: float
    pre_malignant_probability: float
    threshold: float | None
    sensitivity: str  # how often the model flagged malignant lesions in Test, as words; "" if unknown

    def as_dict(self) -> dict:
        """The JSON form used by the API."""
        return asdict(self)


def operating_threshold(metadata: dict) -> float | None:
    """The validated malignant threshold from the model's metadata, or None for an unvalidated model."""
    threshold = metadata.get("metrics", {}).get("operating_point", {}).get("malignant_threshold")
    return float(threshold) if threshold is not None else None


def advise(
    risk_probabilities: dict[str, float], metadata: dict, top_class: tuple[str, float] | None = None
) -> Advice:
    """Apply the rule of this module to grouped probabilities; top_class (name, p) explains a mismatch."""
    malignant = risk_probabilities[MALIGNANT]
    pre_malignant = risk_probabilities[PRE_MALIGNANT]
    threshold = operating_threshold(metadata)
    sensitivity = sensitivity_sentence(metadata)
    if threshold is None:
        level = HAVE_CHECKED
        reason = "This model has no validated operating point, so it cannot tell a low-concern photo apart."
    elif malignant >= threshold:
        level = SEE_DOCTOR
        reason = (
            f"The model gives the malignant group ({_names(MALIGNANT)}) {percent(malignant)}, at or above "
            f"the {percent(threshold)} at which it sends a lesion to a doctor."
        )
    elif malignant + pre_malignant >= threshold:
        level = HAVE_CHECKED
        value, limit = _pair(malignant, threshold)
        reason = (
            f"The malignant group is at {value}, below the {limit} threshold, but together with the "
            f"pre-malignant group ({_names(PRE_MALIGNANT)}, {percent(pre_malignant)}) it reaches it."
        )
    else:
        level = KEEP_WATCHING
        value, limit = _pair(malignant + pre_malignant, threshold)
        reason = (
            f"The malignant and pre-malignant groups together are at {value}, "
            f"below the {limit} at which the model sends a lesion to a doctor."
        )
    if top_class is not None:
        reason += _top_class_note(level, *top_class)
    return Advice(
        level=level,
        reason=reason,
        malignant_probability=malignant,
        pre_malignant_probability=pre_malignant,
        threshold=threshold,
        sensitivity=sensitivity,
        **LEVELS[level],
    )


def explained_class(advice: Advice, probabilities: dict[str, float]) -> str:
    """The class the heat map shows: the most likely class of the groups the advice rests on.

    An unvalidated model's "have it checked" rests on no group (it has no threshold): its top class.
    """
    groups = EXPLAINED_GROUPS[advice.level] if advice.threshold is not None else tuple(config.RISK_GROUPS)
    classes = [name for group in groups for name in config.RISK_GROUPS[group]]
    return max(classes, key=probabilities.__getitem__)


def sensitivity_sentence(metadata: dict) -> str:
    """How many malignant Test lesions the threshold caught, with its 95% interval, from metadata."""
    test = metadata.get("metrics", {}).get("test", {})
    sensitivity = test.get("malignant_sensitivity")
    if sensitivity is None:
        return ""
    interval = test.get("intervals_95", {}).get("malignant_sensitivity")
    bounds = f"95% interval {percent(interval[0])} to {percent(interval[1])}" if interval else ""
    per_class = test.get("per_class", {})
    malignant = int(sum(per_class.get(name, {}).get("support", 0) for name in config.RISK_GROUPS[MALIGNANT]))
    if not malignant:
        share = percent(sensitivity) + (f" ({bounds})" if bounds else "")
        return (
            f"At this threshold the model sent {share} of the malignant lesions in its Test set to a "
            "doctor, so it misses some."
        )
    # The count says what the share is of: the malignant lesions, not every Test image.
    share = percent(sensitivity) + (f", {bounds}" if bounds else "")
    return (
        f"At this threshold the model sent {round(sensitivity * malignant)} of the {malignant} malignant "
        f"lesions in its Test set to a doctor ({share}), so it misses some."
    )


def percent(p: float) -> str:
    """A probability as a percentage a person reads easily: '<1%' rather than '1.58e-07'."""
    value = p * 100
    if 0 < value < 1:
        return "<1%"
    if 99 < value < 100:
        return ">99%"
    return f"{value:.0f}%"


def _pair(value: float, threshold: float) -> tuple[str, str]:
    """A value and the threshold it is compared with, with as many decimals as it takes not to tie."""
    if percent(value) != percent(threshold):
        return percent(value), percent(threshold)
    for decimals in (1, 2, 3):
        shown = f"{value * 100:.{decimals}f}%", f"{threshold * 100:.{decimals}f}%"
        if shown[0] != shown[1]:
            break
    return shown


def _top_class_note(level: str, name: str, probability: float) -> str:
    """A sentence for when the most likely class seems to say the opposite of the advice ("" otherwise)."""
    group = config.RISK_OF_CLASS[name]
    if level != KEEP_WATCHING and group == BENIGN:
        return (
            f" The single most likely class, {name} ({percent(probability)}), is benign, but the advice "
            "follows the total of the group named above, not the most likely class."
        )
    if level == KEEP_WATCHING and group != BENIGN:
        return (
            f" The single most likely class is {name} ({percent(probability)}, {group}), but the "
            "malignant and pre-malignant classes together stay below the threshold."
        )
    return ""


def _names(group: str) -> str:
    return ", ".join(config.RISK_GROUPS[group])
