"""The demo bot: a simulated Telegram file bot with every opsstack feature on."""
from .simulation import DemoBot, DemoOptions, run_demo

__all__ = ["DemoBot", "DemoOptions", "run_demo"]
