"""ai-meter: open AI usage metering."""
