"""The plugin's settings, and the sinks they turn on."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from plugins.metrics import safe_label
from plugins.metrics_push.pusher import Sink
from proxy import __version__
from proxy.settings import Setting, Settings, check_host, check_port

__all__ = ["api_url_for", "build_sinks", "declared", "problems"]

#: CloudWatch's rule for namespaces (PutMetricData): these characters, not ``AWS/``.
_NAMESPACE = re.compile(r"^[A-Za-z0-9.\-_/#: ]{1,255}$")


def _check_namespace(value: str) -> str | None:
    if not _NAMESPACE.match(value) or value.startswith("AWS/"):
        return (f"must be 1 to 255 letters, digits or . - _ / # : and spaces, not starting "
                f"with AWS/, got {value!r}")
    return None


def _check_url(value: str) -> str | None:
    if value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL, got {value!r}"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must be scheme://host[:port][/path], without credentials, query or fragment"
    return None


def declared() -> list[Setting]:
    """Every setting of the plugin."""
    return [
        Setting("metrics_push.flush_seconds", "float", 10.0,
                "Seconds between two submissions to Datadog or two batches of CloudWatch EMF "
                "lines; each carries what the requests that ended meanwhile added.",
                minimum=0.05),
        Setting("metrics_push.service", "str", "mistral-sidecar",
                "The service tag (Datadog) and dimension (CloudWatch) of every series."),
        Setting("metrics_push.owner_tag", "bool", False,
                "Also tag tokens and cost by the caller's owner (one series per owner and "
                "model: enable only with a bounded number of owners)."),
        Setting("datadog.api_key", "str", "",
                "Datadog API key: with it the key series go to Datadog's HTTP API (unless "
                "SIDECAR_DATADOG_STATSD_HOST names an Agent). Needs metrics_push in the "
                "chain.", env="DATADOG_API_KEY", secret=True),
        Setting("datadog.app_key", "str", "",
                "Datadog application key: not needed to submit metrics; when set, Datadog's "
                "library sends it along with the API key.", env="DATADOG_APP_KEY",
                secret=True),
        Setting("datadog.site", "str", "datadoghq.com",
                "Datadog site (datadoghq.com, datadoghq.eu, us3.datadoghq.com ...): the API "
                "is https://api.<site>.", env="DATADOG_SITE", check=check_host),
        Setting("datadog.api_url", "str", "",
                "Datadog API base URL instead of the one DATADOG_SITE gives (a proxy, a test "
                "receiver).", check=_check_url),
        Setting("datadog.statsd_host", "str", "",
                "A Datadog Agent's host: when set, the series go to its DogStatsD over UDP "
                "(the Agent holds the API key) instead of the HTTP API.", check=check_host),
        Setting("datadog.statsd_port", "int", 8125, "The Agent's DogStatsD port.", minimum=1,
                check=check_port),
        Setting("datadog.timeout_seconds", "float", 5.0,
                "Longest wait for one request to Datadog's HTTP API.", minimum=0.1),
        Setting("cloudwatch.emf", "bool", False,
                "Write the key series to standard output as CloudWatch Embedded Metric Format "
                "lines (CloudWatch Logs extracts them: ECS awslogs, Lambda). Needs "
                "metrics_push in the chain."),
        Setting("cloudwatch.namespace", "str", "MistralSidecar",
                "CloudWatch namespace of the EMF metrics.", check=_check_namespace),
    ]


def problems(settings: Settings) -> list[str]:
    """Combinations that cannot work."""
    found = []
    if settings["datadog.api_url"] and not settings["datadog.api_key"] \
            and not settings["datadog.statsd_host"]:
        found.append("SIDECAR_DATADOG_API_URL: needs DATADOG_API_KEY, the key Datadog's HTTP "
                     "API is called with")
    return found


def api_url_for(site: str) -> str:
    """Datadog's API base URL for ``site`` (``datadoghq.eu`` -> ``https://api.datadoghq.eu``;
    the web app's ``app.`` prefix, often pasted, is dropped)."""
    return "https://api." + site.strip().rstrip(".").removeprefix("app.")


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks the settings turn on (none: the plugin stays idle)."""
    service = safe_label(settings["metrics_push.service"])
    environment = safe_label(settings["environment"])
    sinks: list[Sink] = []
    if settings["cloudwatch.emf"]:
        from plugins.metrics_push.emf import EmfSink

        sinks.append(EmfSink(settings["cloudwatch.namespace"],
                             {"service": service, "env": environment},
                             {"version": __version__}))
    tags = [f"service:{service}", f"env:{environment}", f"version:{__version__}"]
    if settings["datadog.statsd_host"]:
        from plugins.metrics_push.datadog_sinks import DogStatsdSink

        sinks.append(DogStatsdSink(settings["datadog.statsd_host"],
                                   int(settings["datadog.statsd_port"]), tags))
    elif settings["datadog.api_key"]:
        from plugins.metrics_push.datadog_sinks import DatadogApiSink

        sinks.append(DatadogApiSink(
            settings["datadog.api_key"], settings["datadog.app_key"],
            settings["datadog.api_url"].rstrip("/") or api_url_for(settings["datadog.site"]),
            float(settings["datadog.timeout_seconds"]), tags))
    return sinks
