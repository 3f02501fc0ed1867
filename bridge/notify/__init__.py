"""Notifications with the picture, through Apprise (ntfy, Pushover, Telegram, e-mail, …)."""
