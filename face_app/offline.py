"""The app runs offline: no analytics, no calls to the Hugging Face hub, served on the loopback address. Set before
gradio is imported (face_app/app.py does it first thing)."""

import os

OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SERVER_NAME": "127.0.0.1"}


def set_offline_environment() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
