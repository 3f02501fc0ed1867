"""What a rule is to Home Assistant beyond its handler: a lock or not, pictures or not. Pure."""

from bridge.config.homeassistant import TEXT_ONLY_HANDLERS, RuleHomeAssistant
from bridge.config.rules import RuleBase

# Label words that make a yes/no rule a lock check (compared case-insensitively).
LOCKED_WORDS = frozenset({"locked", "施錠", "施錠中", "施錠済み"})
UNLOCKED_WORDS = frozenset({"unlocked", "解錠", "開錠", "解錠中", "開錠中"})


def _label_words(rule: RuleBase) -> tuple[str, str] | None:
    """A yes/no rule's (true, false) labels, trimmed and case-folded; None without labels."""
    labels = getattr(rule, "labels", None)
    if labels is None or not hasattr(labels, "true"):
        return None
    return str(labels.true).strip().casefold(), str(labels.false).strip().casefold()


def reads_like_lock(rule: RuleBase) -> bool:
    """True for a yes/no rule whose two labels are a locked and an unlocked word."""
    words = _label_words(rule)
    if rule.handler != "yes_no" or words is None:
        return False
    true, false = words
    return (true in LOCKED_WORDS and false in UNLOCKED_WORDS) or (
        true in UNLOCKED_WORDS and false in LOCKED_WORDS
    )


def device_class(rule: RuleBase) -> str | None:
    """The rule's device class: as written, else lock when its labels read like a lock."""
    options = rule.homeassistant
    if options is not None and "device_class" in options.model_fields_set:
        return options.device_class  # written, even as null: the user's word stands
    return "lock" if reads_like_lock(rule) else None


def has_image(rule: RuleBase) -> bool:
    """Whether the rule gets an image entity: it takes pictures (`accepts`, or an `image:` or
    `snapshot:` section), unless `homeassistant.image` says otherwise."""
    if rule.handler in TEXT_ONLY_HANDLERS:
        return False
    options = rule.homeassistant
    if options is not None and options.image is not None:
        return options.image
    if rule.accepts is not None:  # said outright: a rule that accepts any input may get pictures
        return rule.accepts != "text"
    return rule.accepted == "image"  # an image: or snapshot: section


def on_answer(rule: RuleBase) -> bool:
    """Which yes/no answer means ON. Home Assistant's lock class says on = unlocked, so a
    rule asking "is it locked?" is inverted; the labels tell which way the question goes."""
    options: RuleHomeAssistant | None = rule.homeassistant
    if options is not None and options.on_answer is not None:
        return options.on_answer
    if device_class(rule) != "lock":
        return True
    words = _label_words(rule)
    true_label = words[0] if words else ""
    # "Is it unlocked?" -> yes is on. Anything else (locked, closed, secure…) -> no is on.
    return true_label in UNLOCKED_WORDS or "unlock" in true_label or "open" in true_label
