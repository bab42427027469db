"""The webhook receiver: signature check, inbox, event processing and status history."""
