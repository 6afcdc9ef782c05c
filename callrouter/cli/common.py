"""What every command shares: the root group's options and how settings are found."""
from __future__ import annotations

import click

from callrouter.config import ConfigError, Settings, load_settings


def settings_of(ctx: click.Context, config: str | None = None) -> Settings:
    """Settings from, in order: the command's own `--config`, the root `--config`
    (a file given explicitly must exist), ./callrouter.toml when present, defaults;
    CALLROUTER_* variables win over any file."""
    try:
        if config:
            return load_settings(config, required=True)
        root = ctx.find_root().obj if isinstance(ctx.find_root().obj, dict) else {}
        if root.get("settings") is None:
            root["settings"] = load_settings(root.get("config"))
        return root["settings"]
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


config_option = click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                             help="callrouter.toml to use (default: the main --config or ./callrouter.toml)")


def redact(text: str, settings: Settings) -> str:
    """The database URL's password never reaches the terminal."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(settings.database_url)
        if url.password:
            text = text.replace(str(url.password), "***")
    except Exception:  # noqa: BLE001
        pass
    return text


def mask_secrets(text: str, settings: Settings | None) -> str:
    """Every secret of `settings` (AMI, webhook, the database password) masked in `text`."""
    if settings is None:
        return text
    secrets = [p.secret.get_secret_value() for p in settings.pbx]
    if settings.webhook is not None:
        secrets.append(settings.webhook.secret.get_secret_value())
    for s in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, "***")
    return redact(text, settings)
