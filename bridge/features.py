"""The one list of features. Each is built from its settings; heavy ones are imported only when used."""

from bridge.config.settings import Config
from bridge.extension import Extension


def build_features(config: Config) -> list[Extension]:
    """The extensions the configuration asks for, in start order (the web server last, so the
    features before it have their routers ready)."""
    settings = config.settings
    rules = [rule for rule in config.rules if rule.enabled]
    from bridge.control.extension import ControlExtension

    features: list[Extension] = [ControlExtension()]
    if settings.homeassistant.enabled:
        from bridge.homeassistant.extension import HomeAssistantExtension

        features.append(HomeAssistantExtension(settings.homeassistant))
    from bridge.cameras.extension import CamerasExtension, wants_schedules

    if wants_schedules(rules):
        features.append(CamerasExtension())
    if any(rule.notify for rule in rules):
        from bridge.notify.extension import NotifyExtension  # apprise only when sending

        features.append(NotifyExtension())
    from bridge.aws.extension import aws_extensions  # boto3 only when used

    features += aws_extensions(settings.aws, rules)
    http = settings.http
    # The Todo list (numpy, pykakasi) and the web server (FastAPI) load only when used.
    if http.enabled or any(rule.handler == "todo_match" for rule in rules):
        from bridge.todo.extension import TodoExtension

        features.append(TodoExtension(settings.todo, rules))
    if http.enabled:
        from bridge.web.extension import WebExtension

        features.append(WebExtension(http, providers=list(features)))
    return features
