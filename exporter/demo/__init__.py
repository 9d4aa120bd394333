"""The demo bot: a simulated Telegram file bot with every opsstack feature on."""
from .simulation import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
